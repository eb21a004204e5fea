//! What an origin sends an edge, sans-IO.
//!
//! A stream's description ([`StreamInfo`], JSON) says which tracks to pull
//! and what they are for. Each track then comes as one long HTTP response
//! of CMAF, framed as DASH-IF's CMAF ingest frames it: an init segment
//! (`ftyp` + `moov`) first and again whenever the codec configuration
//! changes, then one `moof` + `mdat` per frame, each after a `prft` that
//! carries the frame's ingest wall-clock time (so PROGRAM-DATE-TIME and
//! latency measures agree across nodes). A `styp` goes before the first
//! frame of each group (a GOP: an encoder's on-demand keyframes inside one
//! do not start a new one), so the edge's groups, and the segments it
//! packages, are the origin's.
//!
//! [`TrackWriter`] turns bus frames into those bytes; [`TrackReader`]
//! turns bytes back into frames, trusting nothing: a box larger than
//! [`MAX_BOX`] is refused before it is buffered, and every length inside
//! is checked against the bytes present.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::bus::{BroadcastMeta, Catalog, TrackInfo, TrackKind};
use crate::media::CodecConfig;
use crate::media::cmaf::{self, CmafError, Sample};
use crate::time::{MediaTime, Timescale};

/// The largest box a reader accepts (a frame's `moof` + `mdat` is two).
/// Ingest refuses frames over 8 MiB.
pub const MAX_BOX: usize = 12 << 20;

/// What an origin says of a live stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// The publisher session it is in (tracks are pulled for this one).
    pub session: u32,
    pub catalog: Catalog,
    pub tracks: Vec<TrackEntry>,
    pub meta: MetaEntry,
}

impl StreamInfo {
    /// Refuses a description an edge cannot take as it is: too many
    /// tracks, names that could not be this node's (they go into URLs and
    /// playlists), a catalog naming a track not listed.
    pub fn check(&self) -> Result<(), String> {
        if self.tracks.is_empty() || self.tracks.len() > MAX_TRACKS {
            return Err(format!("{} tracks (1 to {MAX_TRACKS})", self.tracks.len()));
        }
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.len() <= 64
                && n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b))
        };
        for t in &self.tracks {
            if !name_ok(&t.name) {
                return Err(format!("a track named {:?}", t.name));
            }
        }
        let listed = |n: &str| self.tracks.iter().any(|t| t.name == n);
        let c = &self.catalog;
        for v in &c.video {
            if !listed(&v.track) || !name_ok(&v.name) {
                return Err(format!("a rendition {:?} of track {:?}", v.name, v.track));
            }
        }
        for a in c.audio.iter().chain(&c.webrtc_audio) {
            if !listed(a) {
                return Err(format!("an audio track {a:?} not listed"));
            }
        }
        if c.fallback.as_ref().is_some_and(|f| f.len() > 1024)
            || self.meta.encoder.as_ref().is_some_and(|e| e.len() > 256)
        {
            return Err("an over-long text".into());
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackEntry {
    pub name: String,
    pub kind: TrackKind,
    pub derived: bool,
}

impl From<&TrackInfo> for TrackEntry {
    fn from(t: &TrackInfo) -> Self {
        TrackEntry {
            name: t.name.clone(),
            kind: t.kind,
            derived: t.derived,
        }
    }
}

impl TrackEntry {
    pub fn info(&self) -> TrackInfo {
        TrackInfo {
            name: self.name.clone(),
            kind: self.kind,
            derived: self.derived,
        }
    }
}

/// [`BroadcastMeta`] as it travels.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetaEntry {
    pub frame_rate: Option<f64>,
    pub video_bitrate_kbps: Option<u32>,
    pub audio_bitrate_kbps: Option<u32>,
    pub encoder: Option<String>,
    pub has_audio: Option<bool>,
    pub has_video: Option<bool>,
    pub opus_audio: bool,
    pub source: Option<String>,
}

impl From<&BroadcastMeta> for MetaEntry {
    fn from(m: &BroadcastMeta) -> Self {
        MetaEntry {
            frame_rate: m.frame_rate,
            video_bitrate_kbps: m.video_bitrate_kbps,
            audio_bitrate_kbps: m.audio_bitrate_kbps,
            encoder: m.encoder.clone(),
            has_audio: m.has_audio,
            has_video: m.has_video,
            opus_audio: m.opus_audio,
            source: m.source.map(str::to_owned),
        }
    }
}

impl MetaEntry {
    pub fn meta(&self) -> BroadcastMeta {
        BroadcastMeta {
            frame_rate: self.frame_rate,
            video_bitrate_kbps: self.video_bitrate_kbps,
            audio_bitrate_kbps: self.audio_bitrate_kbps,
            encoder: self.encoder.clone(),
            has_audio: self.has_audio,
            has_video: self.has_video,
            opus_audio: self.opus_audio,
            // The names OME's API uses; anything else is not repeated.
            source: match self.source.as_deref() {
                Some("Rtmp") => Some("Rtmp"),
                Some("WebRTC") => Some("WebRTC"),
                Some("SRT") => Some("SRT"),
                _ => None,
            },
            // An edge serves the origin's catalog and transcodes nothing.
            simulcast: false,
        }
    }
}

/// A frame as an edge writes it on its bus.
#[derive(Clone, Debug, PartialEq)]
pub struct PulledFrame {
    pub config: Arc<CodecConfig>,
    /// The first frame of a group (after a `styp`).
    pub group_start: bool,
    pub dts: MediaTime,
    pub pts: MediaTime,
    pub keyframe: bool,
    pub data: Bytes,
    pub wallclock: SystemTime,
}

/// `styp` (brand `cmfs`, a CMAF segment): a group starts.
const STYP: [u8; 20] = [
    0, 0, 0, 20, b's', b't', b'y', b'p', b'c', b'm', b'f', b's', 0, 0, 0, 0, b'c', b'm', b'f', b's',
];

/// The most tracks a stream's description may list.
pub const MAX_TRACKS: usize = 32;

/// Bus frames to CMAF bytes, for one track's pull.
#[derive(Default)]
pub struct TrackWriter {
    config: Option<Arc<CodecConfig>>,
    timescale: Option<Timescale>,
    sequence: u32,
}

impl TrackWriter {
    /// The bytes for one frame of a group configured by `config`: an init
    /// segment first when the configuration is new, a `styp` when the
    /// frame starts its group, then `prft`, `moof` and `mdat`.
    pub fn frame(
        &mut self,
        config: &Arc<CodecConfig>,
        frame: &crate::bus::Frame,
        group_start: bool,
    ) -> Result<Bytes, CmafError> {
        let timescale = *self.timescale.get_or_insert(frame.dts.timescale());
        let mut out = BytesMut::new();
        if self.config.as_ref() != Some(config) {
            out.extend_from_slice(&cmaf::init_segment(config, timescale.hz())?);
            self.config = Some(config.clone());
        }
        if group_start {
            out.extend_from_slice(&STYP);
        }
        let dts = frame.dts.rescale(timescale).ticks();
        let pts = frame.pts.rescale(timescale).ticks();
        let base = u64::try_from(dts).map_err(|_| CmafError::NegativeTime(dts))?;
        let offset = i32::try_from(pts - dts).map_err(|_| CmafError::NegativeTime(pts - dts))?;
        self.sequence = self.sequence.wrapping_add(1);
        out.extend_from_slice(&cmaf::producer_reference_time(frame.wallclock, base)?);
        out.extend_from_slice(&cmaf::fragment(
            self.sequence,
            dts,
            &[Sample {
                duration: 0,
                composition_offset: offset,
                keyframe: frame.keyframe,
                data: frame.data.clone(),
            }],
        )?);
        Ok(out.freeze())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("a {kind} box of {size} bytes is over the {MAX_BOX}-byte limit")]
    TooLarge { kind: String, size: usize },
    #[error("a {0} box where it does not belong")]
    Unexpected(String),
    #[error("a fragment before any init segment")]
    NoInit,
    #[error(transparent)]
    Cmaf(#[from] CmafError),
}

/// CMAF bytes back to frames, for one track's pull.
#[derive(Default)]
pub struct TrackReader {
    buf: BytesMut,
    config: Option<Arc<CodecConfig>>,
    timescale: Option<Timescale>,
    /// The wall-clock time of the next fragment (its `prft`).
    wallclock: Option<SystemTime>,
    /// A `styp` came: the next frame starts a group.
    group_start: bool,
    /// Frames read but not yet taken.
    ready: std::collections::VecDeque<PulledFrame>,
}

impl TrackReader {
    /// Takes bytes as they arrive.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next whole frame, `None` until more bytes come. An error
    /// leaves the reader unusable: the pull should end.
    pub fn next_frame(&mut self) -> Result<Option<PulledFrame>, WireError> {
        loop {
            if let Some(f) = self.ready.pop_front() {
                return Ok(Some(f));
            }
            let Some((kind, size)) = self.peek(0)? else {
                return Ok(None);
            };
            match &kind {
                b"ftyp" => {
                    // ftyp and its moov are read together.
                    let Some((next, moov_size)) = self.peek(size)? else {
                        return Ok(None);
                    };
                    if &next != b"moov" {
                        return Err(WireError::Unexpected(fourcc(&next)));
                    }
                    let Some(init) = self.take(size + moov_size) else {
                        return Ok(None);
                    };
                    let (config, timescale) = cmaf::read_init(&init)?;
                    self.config = Some(Arc::new(config));
                    self.timescale = Some(
                        Timescale::new(timescale)
                            .ok_or(CmafError::Malformed("timescale 0".into()))?,
                    );
                }
                b"prft" => {
                    let Some(b) = self.take(size) else {
                        return Ok(None);
                    };
                    use mp4_atom::Decode;
                    let prft = mp4_atom::Prft::decode(&mut &b[..])
                        .map_err(|e| CmafError::Malformed(e.to_string()))?;
                    self.wallclock = Some(cmaf::from_ntp(prft.ntp_timestamp));
                }
                b"moof" => {
                    let Some((next, mdat_size)) = self.peek(size)? else {
                        return Ok(None);
                    };
                    if &next != b"mdat" {
                        return Err(WireError::Unexpected(fourcc(&next)));
                    }
                    let Some(fragment) = self.take(size + mdat_size) else {
                        return Ok(None);
                    };
                    let (Some(config), Some(timescale)) = (&self.config, self.timescale) else {
                        return Err(WireError::NoInit);
                    };
                    let (base, samples) = cmaf::read_fragment(&fragment)?;
                    let wallclock = self.wallclock.take().unwrap_or_else(SystemTime::now);
                    // Decode times stay far from i64's end (2^62 ticks:
                    // thousands of years at 90 kHz), so sums cannot wrap.
                    let mut dts = i64::try_from(base)
                        .ok()
                        .filter(|d| *d < 1 << 62)
                        .ok_or_else(|| CmafError::Malformed("decode time out of range".into()))?;
                    for s in samples {
                        let group_start = std::mem::take(&mut self.group_start);
                        self.ready.push_back(PulledFrame {
                            config: config.clone(),
                            group_start,
                            dts: MediaTime::new(dts, timescale),
                            pts: MediaTime::new(dts + i64::from(s.composition_offset), timescale),
                            keyframe: s.keyframe,
                            data: s.data,
                            wallclock,
                        });
                        dts += i64::from(s.duration);
                    }
                }
                b"styp" => {
                    if self.take(size).is_none() {
                        return Ok(None);
                    }
                    self.group_start = true;
                }
                // DASH-IF ingest may send these; nothing in them is needed.
                b"free" | b"emsg" => {
                    if self.take(size).is_none() {
                        return Ok(None);
                    }
                }
                other => return Err(WireError::Unexpected(fourcc(other))),
            }
        }
    }

    /// The header of the box `at` bytes into the buffer, its size checked.
    fn peek(&self, at: usize) -> Result<Option<([u8; 4], usize)>, WireError> {
        let Some(rest) = self.buf.get(at..) else {
            return Ok(None);
        };
        match cmaf::box_header(rest)? {
            Some((kind, size)) if size > MAX_BOX => Err(WireError::TooLarge {
                kind: fourcc(&kind),
                size,
            }),
            other => Ok(other),
        }
    }

    /// The first `n` bytes, once they are all there.
    fn take(&mut self, n: usize) -> Option<Bytes> {
        (self.buf.len() >= n).then(|| self.buf.split_to(n).freeze())
    }
}

fn fourcc(kind: &[u8; 4]) -> String {
    String::from_utf8_lossy(kind).escape_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{Catalog, Frame, TrackKind};
    use crate::media::{AacConfig, AvcConfig};
    use std::time::{Duration, Instant};

    fn avc() -> Arc<CodecConfig> {
        Arc::new(CodecConfig::H264(
            AvcConfig::parse(Bytes::from_static(crate::media::h264::tests::AVCC_320X240)).unwrap(),
        ))
    }

    fn frame(ms: i64, cts: i64, keyframe: bool, data: &'static [u8]) -> Frame {
        Frame {
            dts: MediaTime::from_millis(ms),
            pts: MediaTime::from_millis(ms + cts),
            keyframe,
            data: Bytes::from_static(data),
            wallclock: SystemTime::UNIX_EPOCH
                + Duration::from_millis(1_800_000_000_000 + ms as u64),
            received: Instant::now(),
        }
    }

    #[test]
    fn frames_survive_the_wire_whatever_the_chunking() {
        let avc = avc();
        let aac = Arc::new(CodecConfig::Aac(
            AacConfig::parse(Bytes::from_static(&[0x12, 0x10])).unwrap(),
        ));
        let frames = [
            (avc.clone(), frame(0, 66, true, b"key")),
            (avc.clone(), frame(33, 0, false, b"delta")),
            // A new configuration: a new init segment goes first.
            (aac.clone(), frame(66, 0, true, b"aac")),
        ];
        let mut w = TrackWriter::default();
        let mut bytes = Vec::new();
        for (c, f) in &frames {
            bytes.extend_from_slice(&w.frame(c, f, f.keyframe).unwrap());
        }
        for chunk in [1, 7, 100, bytes.len()] {
            let mut r = TrackReader::default();
            let mut got = Vec::new();
            for piece in bytes.chunks(chunk) {
                r.push(piece);
                while let Some(f) = r.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got.len(), 3, "chunks of {chunk}");
            for (g, (c, f)) in got.iter().zip(&frames) {
                assert_eq!(&g.config, c);
                assert_eq!((g.dts, g.pts, g.keyframe), (f.dts, f.pts, f.keyframe));
                assert_eq!(g.group_start, f.keyframe);
                assert_eq!(g.data, f.data);
                assert_eq!(g.wallclock, f.wallclock);
            }
        }
    }

    #[test]
    fn a_keyframe_inside_a_group_does_not_start_one() {
        let avc = avc();
        let mut w = TrackWriter::default();
        let mut bytes = Vec::new();
        // A GOP, and an on-demand IDR the encoder put inside it.
        for (f, start) in [
            (frame(0, 0, true, b"k"), true),
            (frame(33, 0, false, b"d"), false),
            (frame(66, 0, true, b"idr"), false),
            (frame(99, 0, true, b"next"), true),
        ] {
            bytes.extend_from_slice(&w.frame(&avc, &f, start).unwrap());
        }
        let mut r = TrackReader::default();
        r.push(&bytes);
        let mut starts = Vec::new();
        while let Some(f) = r.next_frame().unwrap() {
            starts.push((f.keyframe, f.group_start));
        }
        assert_eq!(
            starts,
            [(true, true), (false, false), (true, false), (true, true)]
        );
    }

    #[test]
    fn descriptions_with_names_or_counts_an_edge_cannot_take_are_refused() {
        use crate::bus::VideoEntry;
        let track = |name: &str| TrackEntry {
            name: name.into(),
            kind: TrackKind::Video,
            derived: true,
        };
        let good = StreamInfo {
            session: 0,
            catalog: Catalog {
                video: vec![VideoEntry::rung("720p", 1000, true)],
                complete: true,
                ..Default::default()
            },
            tracks: vec![track("720p")],
            meta: MetaEntry::default(),
        };
        assert_eq!(good.check(), Ok(()));
        let mut bad = good.clone();
        bad.tracks[0].name = "720p\n#EXT-X-ENDLIST".into();
        assert!(bad.check().is_err());
        let mut bad = good.clone();
        bad.catalog.video[0].track = "elsewhere".into();
        assert!(bad.check().is_err());
        let mut bad = good.clone();
        bad.catalog.audio = Some("audio".into());
        assert!(bad.check().is_err());
        let mut bad = good.clone();
        bad.tracks = (0..=MAX_TRACKS).map(|i| track(&format!("t{i}"))).collect();
        assert!(bad.check().is_err());
        let mut bad = good;
        bad.tracks.clear();
        assert!(bad.check().is_err());
    }

    #[test]
    fn bad_streams_are_errors_before_anything_large_is_buffered() {
        // A box claiming 4 GiB is refused from its header alone.
        let mut r = TrackReader::default();
        r.push(&[0xff, 0xff, 0xff, 0xff, b'm', b'o', b'o', b'f']);
        assert!(matches!(r.next_frame(), Err(WireError::TooLarge { .. })));
        // A fragment without an init segment.
        let mut w = TrackWriter::default();
        let bytes = w.frame(&avc(), &frame(0, 0, true, b"key"), false).unwrap();
        let init_len = cmaf::init_segment(&avc(), 1000).unwrap().len();
        let mut r = TrackReader::default();
        r.push(&bytes[init_len..]);
        assert!(matches!(r.next_frame(), Err(WireError::NoInit)));
        // Unknown boxes, and a size under 8.
        let mut r = TrackReader::default();
        r.push(b"\0\0\0\x10wxyzAAAAAAAA");
        assert!(matches!(r.next_frame(), Err(WireError::Unexpected(_))));
        let mut r = TrackReader::default();
        r.push(b"\0\0\0\x04moof");
        assert!(r.next_frame().is_err());
        // Every cut of a good stream waits for more, never errs or panics.
        for cut in 0..bytes.len() {
            let mut r = TrackReader::default();
            r.push(&bytes[..cut]);
            assert!(r.next_frame().unwrap().is_none(), "cut at {cut}");
        }
    }
}
