//! Scenario tests of the packager and playlists on simulated streams: frames
//! are built in memory with exact timestamps; no sockets, no clocks.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use m3u8_parser::m3u8::playlist::Playlist;
use m3u8_parser::m3u8::tags::Tag;

use super::packager::{Output, StreamPackager};
use super::playlist::{self, MediaContext, Rendition, RenditionReport, UriQuery, names};
use super::segmenter::SegmenterOutput;
use crate::bus::{Frame, FrameEvent, GroupInfo, TrackKind};
use crate::media::{AacConfig, AvcConfig, CodecConfig};
use crate::time::{MediaTime, Timescale};

fn avc() -> Arc<CodecConfig> {
    Arc::new(CodecConfig::H264(
        AvcConfig::parse(Bytes::from_static(crate::media::h264::tests::AVCC_320X240)).unwrap(),
    ))
}

fn aac() -> Arc<CodecConfig> {
    Arc::new(CodecConfig::Aac(
        AacConfig::parse(Bytes::from_static(&[0x12, 0x10])).unwrap(),
    ))
}

fn event(
    ms: i64,
    keyframe: bool,
    config: &Arc<CodecConfig>,
    session: u32,
    wall: SystemTime,
) -> FrameEvent {
    FrameEvent {
        frame: Frame {
            dts: MediaTime::from_millis(ms),
            pts: MediaTime::from_millis(ms + if keyframe { 0 } else { 66 }),
            keyframe,
            data: Bytes::from(vec![0u8; 100]),
            wallclock: wall + Duration::from_millis(ms as u64),
            received: Instant::now(),
        },
        group: Arc::new(GroupInfo {
            sequence: 0,
            config: config.clone(),
            discontinuity: false,
            session,
        }),
        group_start: keyframe,
        dropped: 0,
    }
}

/// Feeds `secs` of 30 fps video (GOP 1 s) and 44.1 kHz AAC, interleaved by
/// time as RTMP delivers them, starting at input time `start_ms`.
fn feed(
    p: &mut StreamPackager,
    v: usize,
    a: usize,
    start_ms: i64,
    secs: i64,
    session: u32,
    out: &mut Vec<Output>,
) {
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let (vc, ac) = (avc(), aac());
    let frames = secs * 30;
    let mut ai = 0i64;
    for i in 0..frames {
        let vt = start_ms + i * 1000 / 30;
        loop {
            let at = start_ms + ai * 1024 * 1000 / 44_100;
            if at > vt {
                break;
            }
            out.extend(p.push(a, event(at, true, &ac, session, wall)));
            ai += 1;
        }
        out.extend(p.push(v, event(vt, i % 30 == 0, &vc, session, wall)));
    }
}

fn starts(out: &[Output], track: usize) -> Vec<(u64, i64, bool)> {
    out.iter()
        .filter(|o| o.track == track)
        .filter_map(|o| match &o.output {
            SegmenterOutput::SegmentStart {
                msn,
                start,
                discontinuity,
                ..
            } => Some((*msn, *start, *discontinuity)),
            _ => None,
        })
        .collect()
}

fn new_packager() -> (StreamPackager, usize, usize) {
    let mut p = StreamPackager::new(Duration::from_millis(200), Duration::from_secs(1));
    let v = p.add_track(TrackKind::Video, Timescale::MPEG);
    let a = p.add_track(TrackKind::Audio, Timescale::new(44_100).unwrap());
    (p, v, a)
}

#[test]
fn audio_segments_follow_video_boundaries_and_numbers() {
    let (mut p, v, a) = new_packager();
    let mut out = vec![];
    feed(&mut p, v, a, 0, 6, 0, &mut out);
    let vs = starts(&out, v);
    let as_ = starts(&out, a);
    assert!(vs.len() >= 5, "{vs:?}");
    assert_eq!(vs.len(), as_.len(), "video {vs:?} audio {as_:?}");
    for ((vm, vt, _), (am, at, _)) in vs.iter().zip(&as_) {
        assert_eq!(vm, am);
        let video_s = *vt as f64 / 90_000.0;
        let audio_s = *at as f64 / 44_100.0;
        // Audio starts at its first part boundary at or after the video
        // boundary: at most a part (and a frame) later.
        assert!(
            audio_s >= video_s - 1e-9 && audio_s - video_s < 0.2 + 1024.0 / 44_100.0,
            "{video_s} {audio_s}"
        );
    }
    // So an audio segment is whole parts, its last included (none is a
    // frame or two that hls.js would skip).
    let ps = parts(&out, a, 44_100.0);
    let closed: Vec<u64> = ends(&out, a, 44_100.0).iter().map(|e| e.0).collect();
    for (msn, index, duration, _) in &ps {
        if closed.contains(msn) && *msn > as_[0].0 {
            assert!(
                *duration >= 0.85 * 0.2,
                "part {msn}.{index} lasts {duration}: {ps:?}"
            );
        }
    }
}

#[test]
fn reconnect_continues_the_timeline_with_a_discontinuity() {
    let (mut p, v, a) = new_packager();
    let mut out = vec![];
    feed(&mut p, v, a, 5000, 3, 0, &mut out);
    out.extend(p.interrupt(v));
    out.extend(p.interrupt(a));
    let first = out.len();
    // The publisher returns; its timestamps restart at 0.
    feed(&mut p, v, a, 0, 3, 1, &mut out);
    let before = starts(&out[..first], v);
    let after = starts(&out[first..], v);
    let (last_msn, _, _) = *before.last().unwrap();
    let (msn, start, disc) = after[0];
    assert_eq!(msn, last_msn + 1);
    assert!(disc, "first segment after a reconnect is a discontinuity");
    // The new session continues after the old one's end (3 s after its 5 s
    // start) plus the 1 s reconnect gap, not back at 0.
    let end_of_first = 5.0 + 3.0;
    let start_s = start as f64 / 90_000.0;
    assert!((start_s - (end_of_first + 1.0)).abs() < 0.05, "{start_s}");
    let audio_after = starts(&out[first..], a);
    assert_eq!(audio_after[0].0, msn);
    assert!(audio_after[0].2);
}

#[test]
fn codec_change_starts_a_segment_with_a_new_init() {
    let (mut p, v, _a) = new_packager();
    let wall = SystemTime::UNIX_EPOCH;
    let vc = avc();
    let mut out = vec![];
    for i in 0..20 {
        out.extend(p.push(v, event(i * 33, i == 0, &vc, 0, wall)));
    }
    // Same SPS bytes but a different profile byte: a new configuration.
    let CodecConfig::H264(mut changed) = (*vc).clone() else {
        unreachable!()
    };
    changed.level = 0x1f;
    let changed = Arc::new(CodecConfig::H264(changed));
    out.extend(p.push(v, event(20 * 33, true, &changed, 0, wall)));
    out.extend(p.push(v, event(21 * 33, false, &changed, 0, wall)));
    let s: Vec<_> = out
        .iter()
        .filter_map(|o| match &o.output {
            SegmenterOutput::SegmentStart {
                msn,
                init,
                discontinuity,
                ..
            } => Some((*msn, init.is_some(), *discontinuity)),
            _ => None,
        })
        .collect();
    // Cut at 660 ms, before the 1 s target, because the parameters changed.
    assert_eq!(s, vec![(0, true, false), (1, true, true)]);
}

#[test]
fn audio_before_the_first_video_keyframe_is_dropped() {
    let (mut p, v, a) = new_packager();
    let wall = SystemTime::UNIX_EPOCH;
    let (vc, ac) = (avc(), aac());
    let mut out = vec![];
    for i in 0..10 {
        out.extend(p.push(a, event(i * 23, true, &ac, 0, wall)));
    }
    out.extend(p.push(v, event(150, true, &vc, 0, wall)));
    out.extend(p.push(a, event(230, true, &ac, 0, wall)));
    out.extend(p.push(v, event(183, false, &vc, 0, wall)));
    out.extend(p.push(v, event(216, false, &vc, 0, wall)));
    out.extend(p.push(v, event(250, false, &vc, 0, wall)));
    out.extend(p.push(a, event(253, true, &ac, 0, wall)));
    let audio = starts(&out, a);
    // Audio's first segment starts at its first frame at or after 150 ms.
    let first = audio[0].1 as f64 / 44_100.0;
    assert!((0.150..0.175).contains(&first), "{first}");
}

/// Builds a rendition by running the packager, as the service does.
fn rendition_from(
    out: &[Output],
    track: usize,
    kind: TrackKind,
    timescale: u32,
    kept: usize,
    part_target: f64,
) -> Rendition {
    let mut r = Rendition::new(
        if kind == TrackKind::Video {
            "video"
        } else {
            "audio"
        }
        .into(),
        kind,
        timescale,
        kept,
    );
    r.part_target = Some(part_target);
    for o in out.iter().filter(|o| o.track == track) {
        let copy = match &o.output {
            SegmenterOutput::SegmentStart {
                msn,
                discontinuity,
                program_date_time,
                init,
                start,
            } => SegmenterOutput::SegmentStart {
                msn: *msn,
                discontinuity: *discontinuity,
                program_date_time: *program_date_time,
                init: init.clone(),
                start: *start,
            },
            SegmenterOutput::Part {
                msn,
                index,
                duration,
                independent,
                data,
                received,
            } => SegmenterOutput::Part {
                msn: *msn,
                index: *index,
                duration: *duration,
                independent: *independent,
                data: data.clone(),
                received: received.clone(),
            },
            SegmenterOutput::SegmentEnd { msn, duration } => SegmenterOutput::SegmentEnd {
                msn: *msn,
                duration: *duration,
            },
        };
        r.apply(copy, Some(&avc()));
    }
    r
}

/// A live playlist's context: target duration 1 s, no reports, no skip.
fn live_context() -> MediaContext<'static> {
    MediaContext {
        instance: "x",
        query: UriQuery::NONE,
        target_duration: 1,
        part_hold_back: 0.6,
        reports: &[],
        ended: false,
        skip: false,
    }
}

fn segments(text: &str) -> Vec<(u64, String)> {
    let pl = Playlist::from_reader(text.as_bytes()).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    pl.media_segments()
        .into_iter()
        .map(|s| (s.sequence, s.uri.clone()))
        .collect()
}

#[test]
fn playlists_parse_and_delta_updates_match_the_full_playlist() {
    let (mut p, v, a) = new_packager();
    let mut out = vec![];
    feed(&mut p, v, a, 0, 20, 0, &mut out);
    let pt = p.segmenter(v).part_target_secs().unwrap();
    let r = rendition_from(&out, v, TrackKind::Video, 90_000, 12, pt);
    let reports = [RenditionReport {
        uri: "audio_x.m3u8".into(),
        last_msn: 19,
        last_part: 2,
    }];
    let ctx = |skip| MediaContext {
        instance: "x",
        query: UriQuery::NONE,
        target_duration: 1,
        part_hold_back: 3.0 * pt,
        reports: &reports,
        ended: false,
        skip,
    };
    let full = playlist::render_media(&r, &ctx(false));
    let delta = playlist::render_media(&r, &ctx(true));
    let pl = Playlist::from_reader(full.as_bytes()).unwrap();
    if let Err(errors) = pl.validate() {
        panic!("full playlist invalid: {errors:?}\n{full}");
    }
    let full_segs = segments(&full);
    assert_eq!(full_segs.len(), 12);
    // The delta skips the segments more than 6 target durations (6 s) from
    // the end and lists the rest with the same numbers.
    let skipped: usize = delta
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-SKIP:SKIPPED-SEGMENTS="))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(skipped, 12 - 6);
    let delta_uris: Vec<_> = delta
        .lines()
        .filter(|l| l.ends_with(".m4s") && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    let full_tail: Vec<_> = full_segs[skipped..]
        .iter()
        .map(|(_, u)| u.clone())
        .collect();
    assert_eq!(delta_uris, full_tail);
    assert!(delta.contains("#EXT-X-VERSION:9"));
    // Every segment the delta lists carries its parts (a player behind the
    // live edge finishes the segment it is in part by part); the older
    // ones are listed whole.
    let mut with_parts = vec![];
    let mut parts_since_uri = 0;
    for l in full.lines() {
        if l.starts_with("#EXT-X-PART:") {
            parts_since_uri += 1;
        } else if l.ends_with(".m4s") && !l.starts_with('#') {
            with_parts.push(parts_since_uri > 0);
            parts_since_uri = 0;
        }
    }
    assert_eq!(with_parts.len(), 12);
    assert!(
        with_parts[..skipped].iter().all(|p| !p) && with_parts[skipped..].iter().all(|p| *p),
        "{with_parts:?}\n{full}"
    );

    // LL-HLS rules on the full playlist.
    let tags = &pl.tags;
    let part_target = tags.iter().find_map(|t| match t {
        Tag::ExtXPartInf {
            part_target_duration,
        } => Some(*part_target_duration),
        _ => None,
    });
    let part_target = part_target.expect("EXT-X-PART-INF");
    let parts: Vec<_> = full
        .lines()
        .filter(|l| l.starts_with("#EXT-X-PART:"))
        .collect();
    assert!(!parts.is_empty());
    for l in &parts {
        let d: f64 = l["#EXT-X-PART:DURATION=".len()..]
            .split(',')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(d <= part_target, "{l}");
    }
    let hint = full
        .lines()
        .find(|l| l.starts_with("#EXT-X-PRELOAD-HINT"))
        .unwrap();
    let (msn, part) = r.next_part().unwrap();
    assert!(
        hint.contains(&names::part("video", "x", msn, part)),
        "{hint}"
    );
    assert!(full.contains("#EXT-X-RENDITION-REPORT:URI=\"audio_x.m3u8\",LAST-MSN=19,LAST-PART=2"));
}

#[test]
fn discontinuity_sequence_counts_from_the_first_listed_segment() {
    let (mut p, v, a) = new_packager();
    let mut out = vec![];
    feed(&mut p, v, a, 0, 3, 0, &mut out);
    out.extend(p.interrupt(v));
    out.extend(p.interrupt(a));
    feed(&mut p, v, a, 0, 4, 1, &mut out);
    let pt = p.segmenter(v).part_target_secs().unwrap();
    let ctx = live_context();
    // Keep 4 segments: the playlist holds seg 2 (session 0) then the
    // discontinuity.
    let r = rendition_from(&out, v, TrackKind::Video, 90_000, 4, pt);
    let text = playlist::render_media(&r, &ctx);
    assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:0"), "{text}");
    assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1);
    // Keep 3: the first listed segment is the one after the discontinuity.
    let r = rendition_from(&out, v, TrackKind::Video, 90_000, 3, pt);
    let text = playlist::render_media(&r, &ctx);
    assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1"), "{text}");
    assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 0);
}

/// A private stream's playlists name every file with the viewer's token:
/// the map, parts, segments, preload hint, rendition reports and, in the
/// master, every media playlist. A token that could end a URI or a line
/// is percent-encoded.
#[test]
fn a_token_is_rendered_into_every_uri() {
    let (mut p, v, a) = new_packager();
    let mut out = vec![];
    feed(&mut p, v, a, 0, 3, 0, &mut out);
    let pt = p.segmenter(v).part_target_secs().unwrap();
    let r = rendition_from(&out, v, TrackKind::Video, 90_000, 10, pt);
    let query = UriQuery::token("ab.c-d_e~1%2B\"\n#EXT-X-ENDLIST");
    assert_eq!(query, "token=ab.c-d_e~1%2B%22%0A%23EXT-X-ENDLIST");
    let reports = [RenditionReport {
        uri: names::media_playlist("audio", "x"),
        last_msn: 2,
        last_part: 1,
    }];
    let ctx = MediaContext {
        instance: "x",
        query: UriQuery::new(Some(&query)),
        target_duration: 1,
        part_hold_back: 0.6,
        reports: &reports,
        ended: false,
        skip: false,
    };
    let text = playlist::render_media(&r, &ctx);
    let mut uris = 0;
    for line in text.lines() {
        let uri = match line.find("URI=\"") {
            Some(at) => line[at + 5..].split('"').next().unwrap(),
            None if !line.starts_with('#') && !line.is_empty() => line,
            None => continue,
        };
        assert!(uri.ends_with(&format!("?{query}")), "{line}");
        uris += 1;
    }
    // The map, 3 segments, at least a part, the hint and the report.
    assert!(uris >= 7, "{text}");
    assert!(!text.contains("#EXT-X-ENDLIST"), "{text}");
    let ar = rendition_from(&out, a, TrackKind::Audio, 44_100, 10, pt);
    let master = playlist::render_master(&[&r, &ar], "x", UriQuery::new(Some(&query)));
    assert!(
        master.contains(&format!("video_x.m3u8?{query}\n")),
        "{master}"
    );
    assert!(
        master.contains(&format!("URI=\"audio_x.m3u8?{query}\"")),
        "{master}"
    );
}

#[test]
fn master_playlist_describes_the_stream() {
    let (mut p, v, a) = new_packager();
    let mut out = vec![];
    feed(&mut p, v, a, 0, 3, 0, &mut out);
    let pt = p.segmenter(v).part_target_secs().unwrap();
    let mut vr = rendition_from(&out, v, TrackKind::Video, 90_000, 10, pt);
    vr.config = Some((*avc()).clone());
    let mut ar = rendition_from(&out, a, TrackKind::Audio, 44_100, 10, pt);
    ar.config = Some((*aac()).clone());
    let text = playlist::render_master(&[&vr, &ar], "x", UriQuery::NONE);
    let pl = Playlist::from_reader(text.as_bytes()).unwrap();
    if let Err(errors) = pl.validate() {
        panic!("master invalid: {errors:?}\n{text}");
    }
    let inf = pl
        .tags
        .iter()
        .find_map(|t| match t {
            Tag::ExtXStreamInf {
                bandwidth,
                codecs,
                resolution,
                frame_rate,
                audio,
                ..
            } => Some((
                *bandwidth,
                codecs.clone(),
                resolution.clone(),
                *frame_rate,
                audio.clone(),
            )),
            _ => None,
        })
        .unwrap();
    assert!(inf.0 > 0);
    assert_eq!(inf.1.as_deref(), Some("avc1.64000d,mp4a.40.2"));
    assert_eq!(inf.2.as_deref(), Some("320x240"));
    assert!((inf.3.unwrap() - 30.0).abs() < 0.1, "{:?}", inf.3);
    assert_eq!(inf.4.as_deref(), Some("audio"));
}

/// The master lists video in the catalog's order (rank), not in the order
/// the renditions started: a simulcast publisher's small layer may come
/// first, and the first variant listed is where many players start.
#[test]
fn master_lists_video_in_catalog_order() {
    let (mut p, v, a) = new_packager();
    let mut out = vec![];
    feed(&mut p, v, a, 0, 3, 0, &mut out);
    let pt = p.segmenter(v).part_target_secs().unwrap();
    let mut small = rendition_from(&out, v, TrackKind::Video, 90_000, 10, pt);
    let mut large = rendition_from(&out, v, TrackKind::Video, 90_000, 10, pt);
    small.config = Some((*avc()).clone());
    large.config = small.config.clone();
    small.name = "video2".into();
    large.name = "video".into();
    (small.rank, large.rank) = (1, 0);
    let text = playlist::render_master(&[&small, &large], "x", UriQuery::NONE);
    let uris: Vec<&str> = text.lines().filter(|l| l.ends_with(".m3u8")).collect();
    assert_eq!(uris, ["video_x.m3u8", "video2_x.m3u8"], "{text}");
    (small.rank, large.rank) = (0, 1);
    let text = playlist::render_master(&[&small, &large], "x", UriQuery::NONE);
    let uris: Vec<&str> = text.lines().filter(|l| l.ends_with(".m3u8")).collect();
    assert_eq!(uris, ["video2_x.m3u8", "video_x.m3u8"], "{text}");
}

// Regression tests for hostile or broken sources: each names the defect it
// guards against.

fn ends(out: &[Output], track: usize, timescale: f64) -> Vec<(u64, f64)> {
    out.iter()
        .filter(|o| o.track == track)
        .filter_map(|o| match &o.output {
            SegmenterOutput::SegmentEnd { msn, duration } => {
                Some((*msn, *duration as f64 / timescale))
            }
            _ => None,
        })
        .collect()
}

fn parts(out: &[Output], track: usize, timescale: f64) -> Vec<(u64, u32, f64, bool)> {
    out.iter()
        .filter(|o| o.track == track)
        .filter_map(|o| match &o.output {
            SegmenterOutput::Part {
                msn,
                index,
                duration,
                independent,
                ..
            } => Some((*msn, *index, *duration as f64 / timescale, *independent)),
            _ => None,
        })
        .collect()
}

/// Pushes `frames` video frames at 30 fps from 0 with 44.1 kHz AAC
/// interleaved by time, as RTMP delivers them: `audio(ms)` makes each
/// audio frame (`None`: not sent), `video(i, ms)` each video frame.
fn interleave(
    p: &mut StreamPackager,
    (v, a): (usize, usize),
    frames: i64,
    mut audio: impl FnMut(i64) -> Option<FrameEvent>,
    mut video: impl FnMut(i64, i64) -> FrameEvent,
    out: &mut Vec<Output>,
) {
    let mut ai = 0i64;
    for i in 0..frames {
        let vt = i * 1000 / 30;
        loop {
            let at = ai * 1024 * 1000 / 44_100;
            if at > vt {
                break;
            }
            if let Some(ev) = audio(at) {
                out.extend(p.push(a, ev));
            }
            ai += 1;
        }
        out.extend(p.push(v, video(i, vt)));
    }
}

/// Feeds video at 30 fps from `start_ms` for `ms`, keyframes per `key`, with
/// audio interleaved.
fn feed_custom(
    p: &mut StreamPackager,
    (v, a): (usize, usize),
    start_ms: i64,
    ms: i64,
    key: impl Fn(i64) -> bool,
    out: &mut Vec<Output>,
) {
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let (vc, ac) = (avc(), aac());
    let mut ai = 0i64;
    let mut i = 0i64;
    while i * 1000 / 30 < ms {
        let vt = start_ms + i * 1000 / 30;
        loop {
            let at = start_ms + ai * 1024 * 1000 / 44_100;
            if at > vt {
                break;
            }
            out.extend(p.push(a, event(at, true, &ac, 0, wall)));
            ai += 1;
        }
        out.extend(p.push(v, event(vt, key(i), &vc, 0, wall)));
        i += 1;
    }
}

#[test]
fn segments_are_cut_without_keyframes_before_they_exceed_the_target_duration() {
    let (mut p, v, a) = new_packager();
    let mut out = vec![];
    // One keyframe, then 35 s of inter frames (intra refresh, or hostile).
    feed_custom(&mut p, (v, a), 0, 35_000, |i| i == 0, &mut out);
    assert_eq!(p.target_duration(), Some(10));
    let video = ends(&out, v, 90_000.0);
    assert!(video.len() >= 3, "{video:?}");
    for (msn, d) in &video {
        assert!(d.round() <= 10.0, "segment {msn} lasts {d}");
    }
    // Cut segments do not start with a keyframe, and say so.
    let vp = parts(&out, v, 90_000.0);
    assert!(vp.iter().any(|p| p.1 == 0 && !p.3));
    let mut r = rendition_from(&out, v, TrackKind::Video, 90_000, 10, 0.21);
    r.config = Some((*avc()).clone());
    let master = playlist::render_master(&[&r], "x", UriQuery::NONE);
    assert!(!master.contains("EXT-X-INDEPENDENT-SEGMENTS"), "{master}");
}

#[test]
fn a_longer_gop_later_is_cut_to_the_fixed_target_duration() {
    let (mut p, v, a) = new_packager();
    let mut out = vec![];
    // 1 s GOPs fix the target duration at 1; then the source switches to 4 s.
    feed_custom(&mut p, (v, a), 0, 5_000, |i| i % 30 == 0, &mut out);
    assert_eq!(p.target_duration(), Some(1));
    feed_custom(&mut p, (v, a), 5_000, 12_000, |i| i % 120 == 0, &mut out);
    for (msn, d) in ends(&out, v, 90_000.0)
        .iter()
        .chain(&ends(&out, a, 44_100.0))
    {
        assert!(d.round() <= 1.0, "segment {msn} lasts {d}");
    }
}

#[test]
fn audio_media_sequence_numbers_never_skip() {
    let (mut p, v, a) = new_packager();
    let wall = SystemTime::UNIX_EPOCH;
    let (vc, ac) = (avc(), aac());
    let mut out = vec![];
    // 8 s of video; audio stops for 3 s in the middle.
    interleave(
        &mut p,
        (v, a),
        240,
        |at| (!(2000..5000).contains(&at)).then(|| event(at, true, &ac, 0, wall)),
        |i, vt| event(vt, i % 30 == 0, &vc, 0, wall),
        &mut out,
    );
    let audio: Vec<u64> = starts(&out, a).iter().map(|s| s.0).collect();
    for w in audio.windows(2) {
        assert_eq!(w[1], w[0] + 1, "audio numbers skip: {audio:?}");
    }
    // Having caught up, audio segments line up with video's again.
    let video = starts(&out, v);
    let last_audio = starts(&out, a).last().copied().unwrap();
    let same = video.iter().find(|s| s.0 == last_audio.0).unwrap();
    let lag = last_audio.1 as f64 / 44_100.0 - same.1 as f64 / 90_000.0;
    assert!((-0.03..0.25).contains(&lag), "audio {lag} s after video");
}

#[test]
fn reconnect_with_skewed_first_timestamps_keeps_both_tracks_going() {
    let (mut p, v, a) = new_packager();
    let wall = SystemTime::UNIX_EPOCH;
    let (vc, ac) = (avc(), aac());
    let mut out = vec![];
    // A first session of 80 ms, then a reconnect whose video starts at
    // 200 ms and audio at 0 ms, video arriving first.
    for i in 0..3 {
        out.extend(p.push(v, event(i * 33, i == 0, &vc, 0, wall)));
        out.extend(p.push(a, event(i * 23, true, &ac, 0, wall)));
    }
    out.extend(p.interrupt(v));
    out.extend(p.interrupt(a));
    let before = out.len();
    for i in 0..90 {
        out.extend(p.push(v, event(200 + i * 33, i % 30 == 0, &vc, 1, wall)));
        for j in 0..2 {
            out.extend(p.push(a, event((i * 2 + j) * 23, true, &ac, 1, wall)));
        }
    }
    let after = &out[before..];
    assert!(
        ends(after, v, 90_000.0).len() >= 2,
        "video stalled: {:?} {:?}",
        p.take_notices(),
        starts(after, v)
    );
    assert!(parts(after, a, 44_100.0).len() >= 10, "audio stalled");
    assert!(
        !p.take_notices().iter().any(|n| matches!(n, super::packager::PackagerNotice::Dropped { reason, .. } if reason.contains("negative"))),
    );
}

#[test]
fn held_audio_is_bounded_when_video_never_comes() {
    let (mut p, _v, a) = new_packager();
    let wall = SystemTime::UNIX_EPOCH;
    let ac = aac();
    // A video track exists but sends nothing; audio timestamps never move.
    let mut out = vec![];
    for _ in 0..5000 {
        out.extend(p.push(a, event(0, true, &ac, 0, wall)));
    }
    assert!(p.held_len() <= 1025, "{}", p.held_len());
}

#[test]
fn timestamp_jumps_inside_a_session_are_folded_out() {
    let (mut p, v, a) = new_packager();
    let mut out = vec![];
    feed_custom(&mut p, (v, a), 0, 3_000, |i| i % 30 == 0, &mut out);
    // The encoder's clock jumps 60 s ahead, then back to 0.
    feed_custom(&mut p, (v, a), 63_000, 3_000, |i| i % 30 == 0, &mut out);
    feed_custom(&mut p, (v, a), 0, 3_000, |i| i % 30 == 0, &mut out);
    out.extend(p.finish());
    assert_eq!(p.target_duration(), Some(1));
    let video = ends(&out, v, 90_000.0);
    assert!(video.len() >= 7, "{video:?}");
    for (msn, d) in &video {
        assert!(*d < 1.5, "segment {msn} lasts {d}");
    }
    let target = p.segmenter(v).part_target_secs().unwrap();
    for (msn, i, d, _) in parts(&out, v, 90_000.0) {
        assert!(d <= target, "part {msn}.{i} lasts {d}");
    }
    let jumps = p
        .take_notices()
        .into_iter()
        .filter(|n| matches!(n, super::packager::PackagerNotice::TimestampJump { .. }))
        .count();
    assert_eq!(jumps, 2);
    // The output timeline is continuous: about 9 s of media in 9 s.
    let total: f64 = video.iter().map(|s| s.1).sum();
    assert!((total - 9.0).abs() < 0.5, "{total}");
}

#[test]
fn a_leader_codec_change_is_a_discontinuity_for_audio_too() {
    let (mut p, v, a) = new_packager();
    let wall = SystemTime::UNIX_EPOCH;
    let ac = aac();
    let vc = avc();
    let CodecConfig::H264(mut changed) = (*vc).clone() else {
        unreachable!()
    };
    changed.level = 0x1f;
    let changed = Arc::new(CodecConfig::H264(changed));
    let mut out = vec![];
    let mut ai = 0;
    for i in 0..90i64 {
        let vt = i * 1000 / 30;
        while ai * 1024 * 1000 / 44_100 <= vt {
            out.extend(p.push(a, event(ai * 1024 * 1000 / 44_100, true, &ac, 0, wall)));
            ai += 1;
        }
        let cfg = if i >= 45 { &changed } else { &vc };
        out.extend(p.push(v, event(vt, i % 30 == 0 || i == 45, cfg, 0, wall)));
    }
    let vd: Vec<u64> = starts(&out, v)
        .iter()
        .filter(|s| s.2)
        .map(|s| s.0)
        .collect();
    let ad: Vec<u64> = starts(&out, a)
        .iter()
        .filter(|s| s.2)
        .map(|s| s.0)
        .collect();
    assert_eq!(vd.len(), 1);
    assert_eq!(vd, ad, "audio marks the same segment as a discontinuity");
}

#[test]
fn an_audio_sample_rate_change_keeps_audio_in_sync() {
    let mut p = StreamPackager::new(Duration::from_millis(200), Duration::from_secs(1));
    let a = p.add_track(TrackKind::Audio, Timescale::new(44_100).unwrap());
    let wall = SystemTime::UNIX_EPOCH;
    let a44 = aac();
    // LC, 48 kHz, stereo.
    let a48 = Arc::new(CodecConfig::Aac(
        AacConfig::parse(Bytes::from_static(&[0x11, 0x90])).unwrap(),
    ));
    let mut out = vec![];
    for i in 0..200i64 {
        out.extend(p.push(a, event(i * 1024 * 1000 / 44_100, true, &a44, 0, wall)));
    }
    let base = 200 * 1024 * 1000 / 44_100;
    for i in 0..400i64 {
        out.extend(p.push(
            a,
            event(base + i * 1024 * 1000 / 48_000, true, &a48, 0, wall),
        ));
    }
    let notices = p.take_notices();
    assert!(notices.is_empty(), "{notices:?}");
}

#[test]
fn a_stalled_audio_track_does_not_keep_the_stream_unready() {
    use super::store::OutputState;
    let (mut p, v, a) = new_packager();
    let wall = SystemTime::UNIX_EPOCH;
    let (vc, ac) = (avc(), aac());
    let mut out = vec![];
    // Two audio frames, then only video.
    out.extend(p.push(a, event(0, true, &ac, 0, wall)));
    out.extend(p.push(a, event(23, true, &ac, 0, wall)));
    for i in 0..130 {
        out.extend(p.push(v, event(i * 33, i % 30 == 0, &vc, 0, wall)));
    }
    let mut st = OutputState::default();
    st.renditions
        .push(rendition_from(&out, v, TrackKind::Video, 90_000, 10, 0.21));
    st.renditions
        .push(rendition_from(&out, a, TrackKind::Audio, 44_100, 10, 0.2));
    st.target_duration = p.target_duration();
    assert!(!st.renditions[1].has_complete_segment());
    assert!(st.ready(), "video is 3 segments ahead: audio is left out");
    // While video has a single segment, the stream waits for audio's.
    let one_segment: Vec<_> = out
        .into_iter()
        .take_while(|o| !matches!(o.output, SegmenterOutput::SegmentEnd { msn: 1, .. }))
        .collect();
    let mut st = OutputState::default();
    st.renditions.push(rendition_from(
        &one_segment,
        v,
        TrackKind::Video,
        90_000,
        10,
        0.21,
    ));
    st.renditions.push(rendition_from(
        &one_segment,
        a,
        TrackKind::Audio,
        44_100,
        10,
        0.2,
    ));
    st.target_duration = Some(1);
    assert!(!st.ready());
}

/// Transcoded rungs: the largest leads, the others follow its boundaries
/// (same numbers, same times, same parts); an on-demand IDR inside a group
/// (a WebRTC keyframe request) does not cut a segment on its rung, and a
/// rung that starts late joins at the leader's segment number.
#[test]
fn ladder_rungs_follow_the_leading_rung() {
    let mut p = StreamPackager::new(Duration::from_millis(200), Duration::from_secs(1));
    let top = p.add_track(TrackKind::Video, Timescale::MPEG);
    let mid = p.add_track(TrackKind::Video, Timescale::MPEG);
    let low = p.add_track(TrackKind::Video, Timescale::MPEG);
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let vc = avc();
    let mut out = vec![];
    // 6 s at 30 fps, no reordering, IDR groups every 2 s; `mid` has an
    // on-demand IDR at 3.0 s, inside its group; `low` starts at 2 s.
    for i in 0..180i64 {
        let ms = i * 1000 / 30;
        let boundary = i % 60 == 0;
        for (track, keyframe, group_start) in [
            (low, boundary, boundary),
            (mid, boundary || i == 90, boundary),
            (top, boundary, boundary),
        ] {
            if track == low && i < 60 {
                continue;
            }
            let mut ev = event(ms, keyframe, &vc, 0, wall);
            ev.frame.pts = ev.frame.dts;
            ev.group_start = group_start;
            out.extend(p.push(track, ev));
        }
    }
    out.extend(p.finish());
    let (t, m, l) = (starts(&out, top), starts(&out, mid), starts(&out, low));
    assert_eq!(t.len(), 3, "{t:?}");
    assert_eq!(
        m, t,
        "mid follows top exactly (no cut at its on-demand IDR)"
    );
    assert_eq!(
        l,
        t[1..].to_vec(),
        "low joins at the leader's second segment"
    );
    let parts = |track: usize| -> Vec<i64> {
        out.iter()
            .filter(|o| o.track == track)
            .filter_map(|o| match &o.output {
                SegmenterOutput::Part { duration, .. } => Some(*duration),
                _ => None,
            })
            .collect()
    };
    assert_eq!(parts(mid), parts(top), "parts line up across rungs");
    assert_eq!(p.target_duration(), Some(2));
}

/// A bypassed top rung with B-frames leads: its boundaries are at its
/// keyframes' decode times, before the encoded rungs' IDRs (at the same
/// presentation time). The encoded rungs cut at their IDRs, never on the
/// P-frames just before.
#[test]
fn encoded_rungs_cut_at_their_idr_behind_a_reordering_leader() {
    let mut p = StreamPackager::new(Duration::from_millis(200), Duration::from_secs(1));
    let top = p.add_track(TrackKind::Video, Timescale::MPEG);
    let low = p.add_track(TrackKind::Video, Timescale::MPEG);
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let vc = avc();
    let mut out = vec![];
    for i in 0..180i64 {
        let ms = i * 1000 / 30;
        let boundary = i % 60 == 0;
        // The leader's keyframes have pts = dts + 66 (reordering).
        let mut lead = event(ms, boundary, &vc, 0, wall);
        lead.frame.pts = MediaTime::from_millis(ms + 66);
        out.extend(p.push(top, lead));
        // The encoded rung: no reordering, its frames at the source's pts.
        let mut ev = event(ms + 66, boundary, &vc, 0, wall);
        ev.frame.pts = ev.frame.dts;
        out.extend(p.push(low, ev));
    }
    out.extend(p.finish());
    let t = starts(&out, top);
    let l = starts(&out, low);
    assert_eq!(t.len(), 3, "{t:?}");
    assert_eq!(
        l.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>(),
        (0..3)
            .map(|k| (k as u64, (k * 2000 + 66) * 90))
            .collect::<Vec<_>>(),
        "the encoded rung's segments start at its IDRs, with the leader's numbers"
    );
}

/// A follower rung whose last frames come after the leader has been
/// interrupted (its encoder finished later) keeps them: they close its
/// last segment when it is interrupted in turn, so every rung ends where
/// the publisher stopped.
#[test]
fn a_followers_last_frames_after_the_leader_stopped_are_kept() {
    let mut p = StreamPackager::new(Duration::from_millis(200), Duration::from_secs(1));
    let top = p.add_track(TrackKind::Video, Timescale::MPEG);
    let low = p.add_track(TrackKind::Video, Timescale::MPEG);
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let vc = avc();
    let mut out = vec![];
    let frame = |i: i64| {
        let mut ev = event(i * 1000 / 30, i % 30 == 0, &vc, 0, wall);
        ev.frame.pts = ev.frame.dts;
        ev
    };
    // 3 s of both; `low` lags the last 15 frames behind.
    for i in 0..90i64 {
        out.extend(p.push(top, frame(i)));
        if i < 75 {
            out.extend(p.push(low, frame(i)));
        }
    }
    out.extend(p.interrupt(top));
    for i in 75..90i64 {
        out.extend(p.push(low, frame(i)));
    }
    out.extend(p.interrupt(low));
    out.extend(p.finish());
    let total = |track| ends(&out, track, 90_000.0).iter().map(|e| e.1).sum::<f64>();
    assert!(
        (total(top) - 3.0).abs() < 0.04,
        "top: {:?}",
        ends(&out, top, 90_000.0)
    );
    assert!(
        (total(low) - total(top)).abs() < 0.001,
        "low ends with top: {:?} vs {:?}",
        ends(&out, low, 90_000.0),
        ends(&out, top, 90_000.0)
    );
    assert_eq!(starts(&out, low), starts(&out, top), "and is cut the same");
}

/// hls.js places an audio playlist against the video by their
/// PROGRAM-DATE-TIMEs, and each fragment by its first presentation time once
/// loaded: a date taken at the first sample's decode time puts a video that
/// reorders (every frame presented 67 ms after it is decoded, as x264 with
/// B-frames sends it) 67 ms off its audio, and hls.js re-places the audio on
/// each reload, leaving a hole it stalls on. Every segment's date is the
/// date of its first presentation time, on a whole millisecond, rounded so
/// that audio is never placed after its media.
#[test]
fn segment_dates_follow_presentation_time_on_every_track() {
    let (mut p, v, a) = new_packager();
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let (vc, ac) = (avc(), aac());
    let mut out = vec![];
    interleave(
        &mut p,
        (v, a),
        150,
        |at| Some(event(at, true, &ac, 0, wall)),
        |i, vt| {
            let mut ev = event(vt, i % 30 == 0, &vc, 0, wall);
            ev.frame.pts = ev.frame.dts + MediaTime::new(6006, Timescale::MPEG);
            ev
        },
        &mut out,
    );
    let dated = |track: usize, scale: f64, cts: f64| -> Vec<(u64, f64, f64)> {
        out.iter()
            .filter(|o| o.track == track)
            .filter_map(|o| match &o.output {
                SegmenterOutput::SegmentStart {
                    msn,
                    start,
                    program_date_time,
                    ..
                } => {
                    let date = match program_date_time.duration_since(wall) {
                        Ok(d) => d.as_secs_f64(),
                        Err(e) => -e.duration().as_secs_f64(),
                    };
                    Some((*msn, *start as f64 / scale + cts, date))
                }
                _ => None,
            })
            .collect()
    };
    let video = dated(v, 90_000.0, 6006.0 / 90_000.0);
    let audio = dated(a, 44_100.0, 0.0);
    assert!(video.len() >= 4 && audio.len() >= 4, "{video:?} {audio:?}");
    let mut compared = 0;
    for (msn, v_pts, v_date) in &video {
        let Some((_, a_pts, a_date)) = audio.iter().find(|s| s.0 == *msn) else {
            continue;
        };
        let by_date = a_date - v_date;
        let by_pts = a_pts - v_pts;
        // Within the dates' millisecond, and never later.
        assert!(
            by_date <= by_pts + 1e-9 && by_date > by_pts - 0.002,
            "segment {msn}: audio starts {by_pts:.5} s after video by time, {by_date:.5} s by date"
        );
        for date in [a_date, v_date] {
            assert!(
                (date * 1000.0 - (date * 1000.0).round()).abs() < 1e-6,
                "{date}"
            );
        }
        compared += 1;
    }
    assert!(compared >= 3, "{video:?} {audio:?}");
    // Each date is the ingest clock's at the sample's decode, plus its
    // reordering: with the publisher's clock the ingest clock here, the
    // date and the presentation time agree, to the millisecond.
    for (msn, time, date) in video.iter().chain(&audio) {
        assert!(
            (date - time).abs() < 0.001,
            "segment {msn}: at {time} dated {date}"
        );
    }

    // The playlist's durations never exceed the media's: a player sums
    // them to place the next segment, and the next part.
    let r = rendition_from(&out, a, TrackKind::Audio, 44_100, 12, 0.2);
    let ctx = live_context();
    let text = playlist::render_media(&r, &ctx);
    let listed = |prefix: &str| -> Vec<f64> {
        text.lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .map(|l| l.split(',').next().unwrap().parse().unwrap())
            .collect()
    };
    let exact = |msn: u64, part: Option<u32>| -> f64 {
        out.iter()
            .filter(|o| o.track == a)
            .find_map(|o| match (&o.output, part) {
                (SegmenterOutput::SegmentEnd { msn: m, duration }, None) if *m == msn => {
                    Some(*duration as f64 / 44_100.0)
                }
                (
                    SegmenterOutput::Part {
                        msn: m,
                        index,
                        duration,
                        ..
                    },
                    Some(i),
                ) if *m == msn && *index == i => Some(*duration as f64 / 44_100.0),
                _ => None,
            })
            .unwrap()
    };
    let extinf = listed("#EXTINF:");
    let closed: Vec<u64> = ends(&out, a, 44_100.0).iter().map(|e| e.0).collect();
    assert_eq!(extinf.len(), closed.len(), "{text}");
    for (d, msn) in extinf.iter().zip(&closed) {
        let e = exact(*msn, None);
        assert!(
            *d <= e && e - d < 1e-5,
            "segment {msn}: listed {d}, lasts {e}\n{text}"
        );
    }
    let first_part = parts(&out, a, 44_100.0)[0];
    let part = listed("#EXT-X-PART:DURATION=")[0];
    let e = exact(first_part.0, Some(first_part.1));
    assert!(
        part <= e && e - part < 1e-5,
        "part listed {part}, lasts {e}\n{text}"
    );
}
