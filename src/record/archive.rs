//! Cuts a stream's packaged CMAF into archive segments (sans-IO).
//!
//! Input: what the LL-HLS packager made ([`Packaged`]), in order. Output:
//! file operations ([`Op`]) for the spool. An archive segment is a run of
//! whole live segments, byte for byte, so it starts where a live segment
//! starts (a keyframe). The leading track (the first recorded video, else
//! the first track) ends an archive segment at the first live segment
//! boundary at least `target` into it; every other track cuts at the same
//! live segment numbers, so renditions stay aligned for ABR. A
//! discontinuity (a publisher back after a drop), a new init segment, or
//! lost input (the tap's queue overflowed) also cut; after lost input a
//! track waits for its next live segment, and that archive segment is
//! marked discontinuous.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;

use crate::bus::TrackKind;
use crate::config::RecordRenditions;
use crate::llhls::tap::Packaged;
use crate::media::CodecConfig;
use crate::store::recordings::RenditionInfo;

/// An archive segment ends at the next live segment once it holds this
/// much, whatever its duration: segments are uploaded and served whole.
pub const MAX_SEGMENT_BYTES: i64 = 64 << 20;
/// Leader boundaries remembered for followers (far more than a follower
/// can lag: the packager holds followers at most a second behind).
const BOUNDARIES_KEPT: usize = 256;

#[derive(Debug, PartialEq)]
pub enum Op {
    /// A recorded rendition, or its description changed (new init).
    Rendition(RenditionInfo),
    /// A whole init segment.
    Init {
        rendition: String,
        seq: i64,
        data: Bytes,
    },
    Open {
        rendition: String,
        seq: i64,
        init_seq: i64,
        /// The live segment it starts at: the same number in every
        /// rendition for the same moment.
        msn: u64,
        discontinuity: bool,
    },
    Append {
        rendition: String,
        seq: i64,
        data: Bytes,
    },
    Close {
        rendition: String,
        seq: i64,
        duration_us: i64,
        bytes: i64,
    },
}

struct OpenSegment {
    seq: i64,
    /// The live segment it started at.
    start_msn: u64,
    ticks: i64,
    bytes: i64,
}

struct Track {
    name: String,
    kind: TrackKind,
    timescale: u32,
    inits: i64,
    next_seq: i64,
    open: Option<OpenSegment>,
    /// Skip parts until the next live segment starts.
    resync: bool,
    /// The next archive segment starts a discontinuity.
    discontinuity_next: bool,
}

impl Track {
    fn us(&self, ticks: i64) -> i64 {
        (i128::from(ticks) * 1_000_000 / i128::from(self.timescale.max(1))) as i64
    }

    fn close(&mut self, out: &mut Vec<Op>) {
        if let Some(o) = self.open.take() {
            out.push(Op::Close {
                rendition: self.name.clone(),
                seq: o.seq,
                duration_us: self.us(o.ticks),
                bytes: o.bytes,
            });
        }
    }
}

pub struct Archiver {
    target_us: i64,
    which: RecordRenditions,
    tracks: HashMap<usize, Track>,
    leader: Option<usize>,
    /// Live segment numbers where the leader started an archive segment.
    boundaries: VecDeque<u64>,
    /// Tracks not recorded, and why (for one log line each).
    skipped: Vec<(String, &'static str)>,
}

/// A rendition name usable as a path part and in URLs.
fn safe_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n != "."
        && n != ".."
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

pub fn rendition_info(
    name: &str,
    kind: TrackKind,
    timescale: u32,
    c: &CodecConfig,
) -> RenditionInfo {
    let (width, height, channels) = match c {
        CodecConfig::Aac(a) => (0, 0, u32::from(a.channels)),
        CodecConfig::Opus(_) => (0, 0, 2),
        video => {
            let (w, h) = video.video_size().unwrap_or_default();
            (w, h, 0)
        }
    };
    RenditionInfo {
        name: name.to_owned(),
        kind: match kind {
            TrackKind::Video => "video",
            TrackKind::Audio => "audio",
        }
        .to_owned(),
        codecs: c.codec_string(),
        width,
        height,
        channels,
        timescale,
    }
}

impl Archiver {
    pub fn new(target: Duration, which: RecordRenditions) -> Archiver {
        Archiver {
            target_us: target.as_micros() as i64,
            which,
            tracks: HashMap::new(),
            leader: None,
            boundaries: VecDeque::new(),
            skipped: Vec::new(),
        }
    }

    /// Tracks left out since the last call, with the reason.
    pub fn take_skipped(&mut self) -> Vec<(String, &'static str)> {
        std::mem::take(&mut self.skipped)
    }

    pub fn push(&mut self, p: Packaged, out: &mut Vec<Op>) {
        match p {
            Packaged::Track {
                track,
                name,
                kind,
                timescale,
                ..
            } => self.add(track, name, kind, timescale),
            Packaged::SegmentStart {
                track,
                msn,
                discontinuity,
                init,
            } => self.segment_start(track, msn, discontinuity, init, out),
            Packaged::Part {
                track,
                duration,
                data,
                ..
            } => {
                let Some(t) = self.tracks.get_mut(&track) else {
                    return;
                };
                if t.resync {
                    return;
                }
                if let Some(o) = &mut t.open {
                    o.ticks += duration.max(0);
                    o.bytes += data.len() as i64;
                    out.push(Op::Append {
                        rendition: t.name.clone(),
                        seq: o.seq,
                        data,
                    });
                }
            }
            Packaged::SegmentEnd { .. } => {}
        }
    }

    fn add(&mut self, track: usize, name: String, kind: TrackKind, timescale: u32) {
        if self.tracks.contains_key(&track) {
            return;
        }
        if !safe_name(&name) {
            self.skipped.push((name, "its name cannot be a file name"));
            return;
        }
        let videos = self
            .tracks
            .values()
            .filter(|t| t.kind == TrackKind::Video)
            .count();
        let audios = self.tracks.len() - videos;
        let wanted = match kind {
            TrackKind::Video => self.which == RecordRenditions::All || videos == 0,
            TrackKind::Audio => audios == 0,
        };
        if !wanted {
            self.skipped.push((
                name,
                "only the top rendition is recorded (record.renditions)",
            ));
            return;
        }
        if kind == TrackKind::Video && videos == 0 {
            // The first video leads, even if audio started first.
            self.leader = Some(track);
        }
        self.tracks.insert(
            track,
            Track {
                name,
                kind,
                timescale,
                inits: 0,
                next_seq: 0,
                open: None,
                resync: false,
                discontinuity_next: false,
            },
        );
    }

    fn segment_start(
        &mut self,
        track: usize,
        msn: u64,
        discontinuity: bool,
        init: Option<(Bytes, std::sync::Arc<CodecConfig>)>,
        out: &mut Vec<Op>,
    ) {
        if self.leader.is_none() && self.tracks.contains_key(&track) {
            self.leader = Some(track);
        }
        let is_leader = self.leader == Some(track);
        let target_us = self.target_us;
        let Some(t) = self.tracks.get_mut(&track) else {
            return;
        };
        let new_init = init.is_some();
        if let Some((data, config)) = init {
            out.push(Op::Rendition(rendition_info(
                &t.name,
                t.kind,
                t.timescale,
                &config,
            )));
            out.push(Op::Init {
                rendition: t.name.clone(),
                seq: t.inits,
                data,
            });
            t.inits += 1;
        }
        if t.inits == 0 {
            // Media without an init segment cannot be played back.
            t.resync = true;
            return;
        }
        let cut = match &t.open {
            None => true,
            Some(o) => {
                discontinuity
                    || new_init
                    || if is_leader {
                        t.us(o.ticks) >= target_us || o.bytes >= MAX_SEGMENT_BYTES
                    } else {
                        self.boundaries
                            .iter()
                            .any(|b| *b > o.start_msn && *b <= msn)
                    }
            }
        };
        if !cut {
            return;
        }
        t.close(out);
        let seq = t.next_seq;
        t.next_seq += 1;
        out.push(Op::Open {
            rendition: t.name.clone(),
            seq,
            init_seq: t.inits - 1,
            msn,
            discontinuity: seq > 0 && (discontinuity || t.discontinuity_next),
        });
        t.open = Some(OpenSegment {
            seq,
            start_msn: msn,
            ticks: 0,
            bytes: 0,
        });
        t.resync = false;
        t.discontinuity_next = false;
        if is_leader {
            if self.boundaries.len() == BOUNDARIES_KEPT {
                self.boundaries.pop_front();
            }
            self.boundaries.push_back(msn);
        }
    }

    /// Input was lost: every open segment ends where the loss began, and
    /// each track starts again at its next live segment, discontinuous.
    pub fn lost(&mut self, out: &mut Vec<Op>) {
        for t in self.tracks.values_mut() {
            t.close(out);
            t.resync = true;
            t.discontinuity_next = true;
        }
    }

    /// The stream ended: every open segment is closed.
    pub fn finish(&mut self, out: &mut Vec<Op>) {
        let mut ids: Vec<_> = self.tracks.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            if let Some(t) = self.tracks.get_mut(&id) {
                t.close(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{AacConfig, AvcConfig};
    use std::sync::Arc;

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

    fn track(track: usize, name: &str, kind: TrackKind, timescale: u32) -> Packaged {
        Packaged::Track {
            track,
            name: name.into(),
            kind,
            timescale,
            configured_bps: None,
        }
    }

    /// One live segment of `secs` seconds in two parts.
    fn segment(
        track: usize,
        msn: u64,
        secs: i64,
        timescale: i64,
        init: Option<Arc<CodecConfig>>,
        discontinuity: bool,
    ) -> Vec<Packaged> {
        vec![
            Packaged::SegmentStart {
                track,
                msn,
                discontinuity,
                init: init.map(|c| (Bytes::from_static(b"init"), c)),
            },
            Packaged::Part {
                track,
                msn,
                duration: secs * timescale / 2,
                data: Bytes::from(format!("{track}:{msn}a")),
            },
            Packaged::Part {
                track,
                msn,
                duration: secs * timescale / 2,
                data: Bytes::from(format!("{track}:{msn}b")),
            },
            Packaged::SegmentEnd { track, msn },
        ]
    }

    fn run(a: &mut Archiver, input: Vec<Packaged>) -> Vec<Op> {
        let mut out = Vec::new();
        for p in input {
            a.push(p, &mut out);
        }
        out
    }

    /// (rendition, seq, duration_us, bytes) of every closed segment.
    fn closes(ops: &[Op]) -> Vec<(String, i64, i64, i64)> {
        ops.iter()
            .filter_map(|o| match o {
                Op::Close {
                    rendition,
                    seq,
                    duration_us,
                    bytes,
                } => Some((rendition.clone(), *seq, *duration_us, *bytes)),
                _ => None,
            })
            .collect()
    }

    /// Leader segments of 2 s with a 5 s target: archive segments of three
    /// live segments (6 s), audio cut at the same live segments, and every
    /// byte of every part kept, in order.
    #[test]
    fn renditions_are_cut_together_at_live_segment_boundaries() {
        let mut a = Archiver::new(Duration::from_secs(5), RecordRenditions::Top);
        let mut input = vec![
            track(0, "video", TrackKind::Video, 90_000),
            track(1, "audio", TrackKind::Audio, 48_000),
        ];
        for msn in 0..7u64 {
            let first = msn == 0;
            input.extend(segment(0, msn, 2, 90_000, first.then(avc), false));
            input.extend(segment(1, msn, 2, 48_000, first.then(aac), false));
        }
        let mut ops = run(&mut a, input);
        a.finish(&mut ops);
        let c = closes(&ops);
        let video: Vec<_> = c.iter().filter(|c| c.0 == "video").collect();
        let audio: Vec<_> = c.iter().filter(|c| c.0 == "audio").collect();
        assert_eq!(
            video.iter().map(|c| (c.1, c.2)).collect::<Vec<_>>(),
            [(0, 6_000_000), (1, 6_000_000), (2, 2_000_000)]
        );
        assert_eq!(
            audio.iter().map(|c| (c.1, c.2)).collect::<Vec<_>>(),
            [(0, 6_000_000), (1, 6_000_000), (2, 2_000_000)]
        );
        let appended: Vec<u8> = ops
            .iter()
            .filter_map(|o| match o {
                Op::Append {
                    rendition, data, ..
                } if rendition == "video" => Some(data.to_vec()),
                _ => None,
            })
            .flatten()
            .collect();
        let expected: String = (0..7).map(|m| format!("0:{m}a0:{m}b")).collect();
        assert_eq!(appended, expected.as_bytes());
        let renditions: Vec<_> = ops
            .iter()
            .filter_map(|o| match o {
                Op::Rendition(r) => Some((r.name.clone(), r.width, r.channels)),
                _ => None,
            })
            .collect();
        assert_eq!(
            renditions,
            [("video".into(), 320, 0), ("audio".into(), 0, 2)]
        );
    }

    /// However long the target, an archive segment ends at the first live
    /// segment after it reached [`MAX_SEGMENT_BYTES`].
    #[test]
    fn a_large_segment_is_cut_early() {
        let mut a = Archiver::new(Duration::from_secs(60), RecordRenditions::Top);
        let mut out = run(&mut a, vec![track(0, "video", TrackKind::Video, 1000)]);
        let big = Bytes::from(vec![0u8; (MAX_SEGMENT_BYTES / 4) as usize]);
        for msn in 0..4u64 {
            for p in segment(0, msn, 2, 1000, (msn == 0).then(avc), false) {
                let p = match p {
                    Packaged::Part {
                        track,
                        msn,
                        duration,
                        ..
                    } => Packaged::Part {
                        track,
                        msn,
                        duration,
                        data: big.clone(),
                    },
                    other => other,
                };
                a.push(p, &mut out);
            }
        }
        a.finish(&mut out);
        // Two live segments (four parts of 16 MiB) each.
        assert_eq!(
            closes(&out).iter().map(|c| (c.1, c.2)).collect::<Vec<_>>(),
            [(0, 4_000_000), (1, 4_000_000)]
        );
    }

    /// `top` keeps the first video rendition and the audio; `all` keeps
    /// every rendition; a name that cannot be a path is left out.
    #[test]
    fn which_renditions_are_recorded() {
        let input = || {
            vec![
                track(0, "1080p", TrackKind::Video, 90_000),
                track(1, "720p", TrackKind::Video, 90_000),
                track(2, "../x", TrackKind::Video, 90_000),
                track(3, "audio", TrackKind::Audio, 48_000),
            ]
        };
        let mut top = Archiver::new(Duration::from_secs(6), RecordRenditions::Top);
        run(&mut top, input());
        let mut names: Vec<_> = top.tracks.values().map(|t| t.name.clone()).collect();
        names.sort();
        assert_eq!(names, ["1080p", "audio"]);
        assert_eq!(top.take_skipped().len(), 2);
        let mut all = Archiver::new(Duration::from_secs(6), RecordRenditions::All);
        run(&mut all, input());
        assert_eq!(all.tracks.len(), 3);
        assert_eq!(all.leader, Some(0));
    }

    /// A reconnect (discontinuity) and a new init cut at once and mark the
    /// segment; lost input ends the open segment and waits for the next
    /// live segment.
    #[test]
    fn discontinuities_new_inits_and_losses_cut() {
        let mut a = Archiver::new(Duration::from_secs(60), RecordRenditions::Top);
        let mut input = vec![track(0, "video", TrackKind::Video, 1000)];
        input.extend(segment(0, 0, 2, 1000, Some(avc()), false));
        input.extend(segment(0, 1, 2, 1000, None, false));
        input.extend(segment(0, 2, 2, 1000, None, true));
        input.extend(segment(0, 3, 2, 1000, Some(avc()), false));
        let mut ops = run(&mut a, input);
        let opens: Vec<_> = ops
            .iter()
            .filter_map(|o| match o {
                Op::Open {
                    seq,
                    init_seq,
                    discontinuity,
                    ..
                } => Some((*seq, *init_seq, *discontinuity)),
                _ => None,
            })
            .collect();
        assert_eq!(opens, [(0, 0, false), (1, 0, true), (2, 1, false)]);
        ops.clear();
        a.lost(&mut ops);
        assert_eq!(closes(&ops), [("video".into(), 2, 2_000_000, 8)]);
        // The rest of the interrupted live segment is skipped.
        let mut ops = run(
            &mut a,
            vec![Packaged::Part {
                track: 0,
                msn: 3,
                duration: 1000,
                data: Bytes::from_static(b"x"),
            }],
        );
        assert!(ops.is_empty());
        ops = run(&mut a, segment(0, 4, 2, 1000, None, false));
        assert!(ops.contains(&Op::Open {
            rendition: "video".into(),
            seq: 3,
            init_seq: 1,
            msn: 4,
            discontinuity: true
        }));
    }
}
