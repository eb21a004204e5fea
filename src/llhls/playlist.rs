//! The LL-HLS playlist model of a stream and its text form.
//!
//! [`Rendition`] holds one track's segments and parts in memory, applying
//! what the segmenter outputs; the `render_*` functions write playlists per
//! draft-pantos-hls-rfc8216bis (LL-HLS, delta updates). m3u8 crates cannot
//! express these tags, so this is our own small writer; tests read its output
//! back with a real parser.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::SystemTime;

use bytes::Bytes;

use super::segmenter::SegmenterOutput;
use crate::bus::TrackKind;
use crate::media::CodecConfig;

/// Delta updates may skip segments older than this many target durations
/// (the spec's minimum).
pub const SKIP_TARGET_DURATIONS: f64 = 6.0;
/// Parts are listed for the segments ending within the last six target
/// durations: every segment a delta update carries. The spec asks for at
/// least three and lets a server remove them after that (a SHOULD). Three
/// were not enough for hls.js: a player whose loading falls more than three
/// target durations behind while it is fetching one segment's parts (with
/// both cores busy, Chromium once took 2.3 s to finish its start-up seek)
/// finds that
/// segment listed whole only, and, having loaded part of it, moves on to the
/// next one, leaving the missing parts as a hole it stalls on.
pub const PART_TARGET_DURATIONS: f64 = SKIP_TARGET_DURATIONS;
/// The spec's Advance Part Limit: how many parts past the newest a client
/// may ask for (three, or three seconds' worth when parts are shorter than
/// a second).
pub fn advance_part_limit(part_target: f64) -> u32 {
    if part_target < 1.0 {
        (3.0 / part_target).floor() as u32
    } else {
        3
    }
}

/// Complete segments beyond this many bytes per rendition are evicted early
/// (a very high bitrate publisher cannot make a playlist hold unbounded
/// memory); at least one complete segment is always kept.
pub const MAX_RENDITION_BYTES: usize = 256 << 20;

#[derive(Debug)]
pub struct Part {
    pub duration: f64,
    pub independent: bool,
    pub data: Bytes,
}

#[derive(Debug)]
pub struct Segment {
    pub msn: u64,
    pub parts: Vec<Part>,
    /// Seconds, once the segment is complete.
    pub duration: Option<f64>,
    pub discontinuity: bool,
    pub program_date_time: SystemTime,
    pub init_id: u32,
    pub frames: u32,
    pub bytes: usize,
}

impl Segment {
    pub fn is_complete(&self) -> bool {
        self.duration.is_some()
    }

    fn parts_duration(&self) -> f64 {
        self.parts.iter().map(|p| p.duration).sum()
    }
}

/// One track's media playlist state.
#[derive(Debug)]
pub struct Rendition {
    pub name: String,
    pub kind: TrackKind,
    pub timescale: u32,
    pub part_target: Option<f64>,
    pub segments: VecDeque<Segment>,
    /// The discontinuity sequence number of the first segment listed.
    pub discontinuity_sequence: u64,
    /// Init segments still referenced, by id.
    pub inits: Vec<(u32, Bytes)>,
    next_init_id: u32,
    /// A segment was cut without a keyframe (the source's keyframes are
    /// further apart than the target duration allows).
    pub non_independent_segments: bool,
    /// Payload bytes held, all segments.
    bytes: usize,
    pub config: Option<CodecConfig>,
    pub peak_bps: f64,
    /// The ladder's configured bitrate for a transcoded rung.
    pub configured_bps: Option<u64>,
    /// A video rendition's place in the catalog (largest first): the
    /// master lists them in this order, whatever order they started in.
    pub rank: usize,
    total_bytes: u64,
    total_secs: f64,
    total_frames: u64,
    segments_kept: usize,
}

impl Rendition {
    pub fn new(name: String, kind: TrackKind, timescale: u32, segments_kept: usize) -> Rendition {
        Rendition {
            name,
            kind,
            timescale,
            part_target: None,
            segments: VecDeque::new(),
            discontinuity_sequence: 0,
            inits: Vec::new(),
            next_init_id: 0,
            non_independent_segments: false,
            bytes: 0,
            config: None,
            peak_bps: 0.0,
            configured_bps: None,
            rank: 0,
            total_bytes: 0,
            total_secs: 0.0,
            total_frames: 0,
            segments_kept,
        }
    }

    /// Takes one segmenter output. `config` is the track's configuration for
    /// a segment start carrying a new init segment.
    pub fn apply(&mut self, output: SegmenterOutput, config: Option<&CodecConfig>) {
        let secs = |ticks: i64| ticks as f64 / f64::from(self.timescale);
        match output {
            SegmenterOutput::SegmentStart {
                msn,
                discontinuity,
                program_date_time,
                init,
                ..
            } => {
                if let Some(init) = init {
                    self.inits.push((self.next_init_id, init));
                    self.next_init_id += 1;
                    if let Some(c) = config {
                        self.config = Some(c.clone());
                    }
                }
                let init_id = self.next_init_id.saturating_sub(1);
                self.segments.push_back(Segment {
                    msn,
                    parts: Vec::new(),
                    duration: None,
                    discontinuity,
                    program_date_time,
                    init_id,
                    frames: 0,
                    bytes: 0,
                });
            }
            SegmenterOutput::Part {
                msn,
                duration,
                independent,
                data,
                received,
                ..
            } => {
                let duration = secs(duration);
                if let Some(seg) = self.segments.back_mut().filter(|s| s.msn == msn) {
                    if seg.parts.is_empty() && !independent {
                        self.non_independent_segments = true;
                    }
                    seg.frames += received.len() as u32;
                    seg.bytes += data.len();
                    self.bytes += data.len();
                    seg.parts.push(Part {
                        duration,
                        independent,
                        data,
                    });
                }
            }
            SegmenterOutput::SegmentEnd { msn, duration } => {
                let duration = secs(duration);
                if let Some(seg) = self.segments.back_mut().filter(|s| s.msn == msn) {
                    seg.duration = Some(duration);
                    if duration > 0.0 {
                        self.peak_bps = self.peak_bps.max(seg.bytes as f64 * 8.0 / duration);
                        self.total_bytes += seg.bytes as u64;
                        self.total_secs += duration;
                        self.total_frames += u64::from(seg.frames);
                    }
                }
                self.evict();
            }
        }
    }

    fn evict(&mut self) {
        let mut complete = self.segments.iter().filter(|s| s.is_complete()).count();
        while complete > self.segments_kept || (complete > 1 && self.bytes > MAX_RENDITION_BYTES) {
            let Some(old) = self.segments.pop_front() else {
                break;
            };
            self.bytes -= old.bytes;
            complete -= 1;
            // EXT-X-DISCONTINUITY-SEQUENCE numbers the first segment listed;
            // a segment after a discontinuity is one higher than the segment
            // before it, so the count moves when such a segment becomes first
            // (its own tag is then no longer written).
            if self.segments.front().is_some_and(|s| s.discontinuity) {
                self.discontinuity_sequence += 1;
            }
        }
        if let Some(first) = self.segments.front() {
            let oldest = first.init_id;
            self.inits.retain(|(id, _)| *id >= oldest);
        }
    }

    pub fn has_complete_segment(&self) -> bool {
        self.segments.iter().any(|s| s.is_complete())
    }

    pub fn average_bps(&self) -> f64 {
        if self.total_secs > 0.0 {
            self.total_bytes as f64 * 8.0 / self.total_secs
        } else {
            0.0
        }
    }

    pub fn frame_rate(&self) -> Option<f64> {
        (self.total_secs > 0.0 && self.total_frames > 0)
            .then(|| self.total_frames as f64 / self.total_secs)
    }

    /// The newest part: (msn, index).
    pub fn last_part(&self) -> Option<(u64, u32)> {
        self.segments
            .iter()
            .rev()
            .find(|s| !s.parts.is_empty())
            .map(|s| (s.msn, s.parts.len() as u32 - 1))
    }

    /// The MSN of the newest segment, complete or not.
    pub fn last_msn(&self) -> Option<u64> {
        self.segments.back().map(|s| s.msn)
    }

    /// The part a player will want next: (msn, index).
    pub fn next_part(&self) -> Option<(u64, u32)> {
        let last = self.segments.back()?;
        Some(if last.is_complete() {
            (last.msn + 1, 0)
        } else {
            (last.msn, last.parts.len() as u32)
        })
    }

    /// Segment `msn`. Numbers are contiguous, so this is an index; the
    /// number is checked anyway.
    pub fn segment(&self, msn: u64) -> Option<&Segment> {
        let first = self.segments.front()?.msn;
        let i = usize::try_from(msn.checked_sub(first)?).ok()?;
        self.segments.get(i).filter(|s| s.msn == msn)
    }

    /// Does the playlist hold part `part` of segment `msn` (a part index
    /// past a complete segment's last means part 0 of the next, as the spec
    /// says), or segment `msn` complete when `part` is `None`?
    pub fn has(&self, msn: u64, part: Option<u32>) -> bool {
        let Some(first) = self.segments.front() else {
            return false;
        };
        if msn < first.msn {
            return true;
        }
        let Some(seg) = self.segment(msn) else {
            return false;
        };
        match part {
            None => seg.is_complete(),
            Some(p) if (p as usize) < seg.parts.len() => true,
            Some(_) if seg.is_complete() => self.has(msn + 1, Some(0)),
            Some(_) => false,
        }
    }

    pub fn init(&self, id: u32) -> Option<&Bytes> {
        self.inits.iter().find(|(i, _)| *i == id).map(|(_, b)| b)
    }
}

/// File names, relative to the master playlist (all in one directory, as
/// OME does). `instance` changes with every broadcast so caches never serve
/// an old stream's media for a new one.
pub mod names {
    pub fn media_playlist(track: &str, instance: &str) -> String {
        format!("{track}_{instance}.m3u8")
    }
    pub fn init(track: &str, instance: &str, id: u32) -> String {
        format!("{track}_{instance}_init{id}.mp4")
    }
    pub fn segment(track: &str, instance: &str, msn: u64) -> String {
        format!("{track}_{instance}_{msn}.m4s")
    }
    pub fn part(track: &str, instance: &str, msn: u64, index: u32) -> String {
        format!("{track}_{instance}_{msn}_{index}.m4s")
    }
}

/// What a media playlist says about its siblings.
pub struct RenditionReport {
    pub uri: String,
    pub last_msn: u64,
    pub last_part: u32,
}

/// What every URI a playlist names carries after the file name: a private
/// stream's `token=...` (so the player's next requests carry it too), or
/// nothing. The query is written as given: [`UriQuery::token`] makes a safe
/// one.
#[derive(Clone, Copy, Debug, Default)]
pub struct UriQuery<'a>(Option<&'a str>);

impl<'a> UriQuery<'a> {
    pub const NONE: UriQuery<'static> = UriQuery(None);

    pub fn is_none(&self) -> bool {
        self.0.is_none()
    }

    /// `token=TOKEN`, when `query` holds one made by [`UriQuery::token`].
    pub fn new(query: Option<&'a str>) -> UriQuery<'a> {
        UriQuery(query)
    }

    /// The query for `token`: every byte outside RFC 3986's unreserved set
    /// (and `%`, already escaped) percent-encoded, so a token can never
    /// end a URI or a line.
    pub fn token(token: &str) -> String {
        let mut q = String::with_capacity(token.len() + 6);
        q.push_str("token=");
        for b in token.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~%".contains(&b) {
                q.push(char::from(b));
            } else {
                let _ = write!(q, "%{b:02X}");
            }
        }
        q
    }
}

impl std::fmt::Display for UriQuery<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(q) => write!(f, "?{q}"),
            None => Ok(()),
        }
    }
}

pub struct MediaContext<'a> {
    pub instance: &'a str,
    /// Added to every URI.
    pub query: UriQuery<'a>,
    /// EXT-X-TARGETDURATION, the same for every playlist of the stream.
    pub target_duration: u64,
    pub part_hold_back: f64,
    pub reports: &'a [RenditionReport],
    pub ended: bool,
    /// Render a delta update (`_HLS_skip=YES`).
    pub skip: bool,
}

/// Seconds, rounded up to milliseconds: for limits that rounded durations
/// must not exceed.
pub fn ceil_ms(secs: f64) -> f64 {
    (secs * 1000.0 - 1e-9).ceil() / 1000.0
}

pub fn render_media(r: &Rendition, ctx: &MediaContext<'_>) -> String {
    let td = ctx.target_duration;
    let part_target = ceil_ms(r.part_target.unwrap_or(0.0));
    let skip_until = SKIP_TARGET_DURATIONS * td as f64;
    let mut o = String::with_capacity(4096);
    let _ = writeln!(o, "#EXTM3U");
    let _ = writeln!(o, "#EXT-X-VERSION:9");
    let _ = writeln!(o, "#EXT-X-TARGETDURATION:{td}");
    if !ctx.ended {
        let _ = writeln!(o, "#EXT-X-PART-INF:PART-TARGET={part_target:.3}");
        let _ = writeln!(
            o,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={skip_until:.1},PART-HOLD-BACK={:.3}",
            ceil_ms(ctx.part_hold_back)
        );
    } else {
        let _ = writeln!(o, "#EXT-X-PART-INF:PART-TARGET={part_target:.3}");
    }
    let first_msn = r.segments.front().map_or(0, |s| s.msn);
    let _ = writeln!(o, "#EXT-X-MEDIA-SEQUENCE:{first_msn}");
    let _ = writeln!(
        o,
        "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
        r.discontinuity_sequence
    );

    // Time from the end of the playlist back to the end of each segment.
    let total: f64 = r
        .segments
        .iter()
        .map(|s| s.duration.unwrap_or_else(|| s.parts_duration()))
        .sum();
    let mut skipped = 0usize;
    if ctx.skip && !ctx.ended {
        let mut end = 0.0;
        for s in &r.segments {
            let Some(d) = s.duration else { break };
            end += d;
            if total - end > skip_until {
                skipped += 1;
            } else {
                break;
            }
        }
    }
    if skipped > 0 {
        let _ = writeln!(o, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
    }

    let mut map: Option<u32> = None;
    let mut start = 0.0;
    for (i, s) in r.segments.iter().enumerate() {
        let d = s.duration.unwrap_or_else(|| s.parts_duration());
        let from_end = total - start;
        start += d;
        if i < skipped {
            continue;
        }
        if s.discontinuity && i > 0 {
            let _ = writeln!(o, "#EXT-X-DISCONTINUITY");
        }
        if map != Some(s.init_id) {
            map = Some(s.init_id);
            let _ = writeln!(
                o,
                "#EXT-X-MAP:URI=\"{}{}\"",
                names::init(&r.name, ctx.instance, s.init_id),
                ctx.query
            );
        }
        let _ = writeln!(
            o,
            "#EXT-X-PROGRAM-DATE-TIME:{}",
            humantime::format_rfc3339_millis(s.program_date_time)
        );
        // Parts for the segments ending within PART_TARGET_DURATIONS.
        if !ctx.ended && from_end <= PART_TARGET_DURATIONS * td as f64 + d {
            for (pi, p) in s.parts.iter().enumerate() {
                let _ = write!(
                    o,
                    "#EXT-X-PART:DURATION={:.5},URI=\"{}{}\"",
                    floor_5(p.duration),
                    names::part(&r.name, ctx.instance, s.msn, pi as u32),
                    ctx.query
                );
                if p.independent {
                    o.push_str(",INDEPENDENT=YES");
                }
                o.push('\n');
            }
        }
        if let Some(d) = s.duration {
            let _ = writeln!(o, "#EXTINF:{:.5},", floor_5(d));
            let _ = writeln!(
                o,
                "{}{}",
                names::segment(&r.name, ctx.instance, s.msn),
                ctx.query
            );
        }
    }
    if ctx.ended {
        let _ = writeln!(o, "#EXT-X-ENDLIST");
        return o;
    }
    if let Some((msn, part)) = r.next_part() {
        let _ = writeln!(
            o,
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}{}\"",
            names::part(&r.name, ctx.instance, msn, part),
            ctx.query
        );
    }
    for rep in ctx.reports {
        let _ = writeln!(
            o,
            "#EXT-X-RENDITION-REPORT:URI=\"{}{}\",LAST-MSN={},LAST-PART={}",
            rep.uri, ctx.query, rep.last_msn, rep.last_part
        );
    }
    o
}

/// The multivariant ("master") playlist: one variant per video rendition,
/// audio as a shared `EXT-X-MEDIA` group.
pub fn render_master(renditions: &[&Rendition], instance: &str, query: UriQuery<'_>) -> String {
    let mut o = String::with_capacity(1024);
    let _ = writeln!(o, "#EXTM3U");
    let _ = writeln!(o, "#EXT-X-VERSION:6");
    if renditions.iter().all(|r| !r.non_independent_segments) {
        let _ = writeln!(o, "#EXT-X-INDEPENDENT-SEGMENTS");
    }
    let audio: Vec<_> = renditions
        .iter()
        .filter(|r| r.kind == TrackKind::Audio && r.has_complete_segment())
        .collect();
    let mut video: Vec<_> = renditions
        .iter()
        .filter(|r| r.kind == TrackKind::Video && r.has_complete_segment())
        .collect();
    video.sort_by_key(|r| r.rank);
    for (i, a) in audio.iter().enumerate() {
        let channels = match &a.config {
            Some(CodecConfig::Aac(c)) if c.channels > 0 => c.channels,
            _ => 2,
        };
        let _ = writeln!(
            o,
            "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"{}\",LANGUAGE=\"und\",DEFAULT={},AUTOSELECT=YES,CHANNELS=\"{channels}\",URI=\"{}{query}\"",
            a.name,
            if i == 0 { "YES" } else { "NO" },
            names::media_playlist(&a.name, instance)
        );
    }
    let audio_peak = audio.iter().map(|a| a.peak_bps).fold(0.0, f64::max);
    let audio_avg = audio.iter().map(|a| a.average_bps()).fold(0.0, f64::max);
    let audio_codec = audio
        .first()
        .and_then(|a| a.config.as_ref())
        .map(|c| c.codec_string());
    for v in &video {
        let mut codecs = v
            .config
            .as_ref()
            .map(|c| c.codec_string())
            .unwrap_or_default();
        if let Some(a) = &audio_codec {
            codecs = format!("{codecs},{a}");
        }
        // A rung's configured rate is its VBV maximum: the measured peak
        // over a short stretch may not have reached it yet.
        let peak = v.peak_bps.max(v.configured_bps.unwrap_or(0) as f64);
        let _ = write!(
            o,
            "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},CODECS=\"{codecs}\"",
            (peak + audio_peak).ceil() as u64,
            (v.average_bps() + audio_avg).ceil() as u64,
        );
        if let Some((w, h)) = v.config.as_ref().and_then(|c| c.video_size()) {
            let _ = write!(o, ",RESOLUTION={w}x{h}");
        }
        if let Some(fps) = v.frame_rate() {
            let _ = write!(o, ",FRAME-RATE={fps:.3}");
        }
        if !audio.is_empty() {
            o.push_str(",AUDIO=\"audio\"");
        }
        o.push('\n');
        let _ = writeln!(o, "{}{query}", names::media_playlist(&v.name, instance));
    }
    if video.is_empty()
        && let Some(a) = audio.first()
    {
        let _ = writeln!(
            o,
            "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},CODECS=\"{}\"",
            a.peak_bps.ceil() as u64,
            a.average_bps().ceil() as u64,
            audio_codec.unwrap_or_default()
        );
        let _ = writeln!(o, "{}{query}", names::media_playlist(&a.name, instance));
    }
    o
}

/// A duration for `{:.5}`, rounded down to the printed precision: a player
/// places each segment and part at the sum of the durations before it, and
/// one placed to end after its media waits for media that is not there
/// (hls.js, with an audio segment whose first part it skipped at start-up).
fn floor_5(seconds: f64) -> f64 {
    // The nudge keeps an exact value (1.0 as 0.9999999999) from dropping a digit.
    ((seconds * 1e5) + 1e-6).floor() / 1e5
}
