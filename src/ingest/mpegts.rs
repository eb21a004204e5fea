//! MPEG-TS from a publisher (SRT carries it) to bus frames.
//!
//! Sans-IO: the caller passes the bytes as they arrive and their arrival
//! time. Two layers:
//! - [`TsDemux`] finds packets (resyncing on lost sync bytes), reads the
//!   PAT and PMT, and gives H.264 or HEVC access units and ADTS frames with
//!   their 33-bit timestamps. The PSI tables, PES headers and continuity counters
//!   are read by the maintained `mpeg2ts-reader` crate; what is on top is
//!   bounded: an access unit of more than 8 MiB is dropped, never grown.
//! - [`TsIngest`] puts them on the timeline and on the broadcast's tracks:
//!   video through [`AnnexBVideo`] (parameter sets in band, start at a
//!   keyframe), AAC with its ADTS header turned into a configuration.
//!
//! Lost packets (a continuity counter gap) drop the unit they cut and video
//! resumes at the next keyframe. A new PMT version that moves a stream to
//! another PID is followed. Other stream types are ignored with a notice.

use bytes::Bytes;
use mpeg2ts_reader::demultiplex::{
    self, DemuxContext, FilterChangeset, FilterRequest, NullPacketFilter, PatPacketFilter,
    PmtPacketFilter,
};
use mpeg2ts_reader::{StreamType, packet, packet_filter_switch, pes, psi};

use super::annexb::{AccessUnit, AnnexBVideo};
use super::tags::{AUDIO_TRACK, Arrival, IngestError, IngestStats, Notice, write_audio};
use crate::bus::{BroadcastMeta, BroadcastProducer, TrackInfo, TrackKind, TrackProducer};
use crate::media::aac::{Adts, AdtsError};
use crate::media::{AacConfig, CodecConfig, VideoCodec};
use crate::time::{MediaTime, Timescale};

pub const PACKET: usize = 188;
const SYNC: u8 = 0x47;
/// The largest video access unit taken (a 4K intra frame is far less).
const MAX_VIDEO_UNIT: usize = 8 << 20;
/// ADTS frames are at most 8191 bytes; a PES is buffered up to this.
const MAX_AUDIO_BUFFER: usize = 64 << 10;
/// 33-bit PTS/DTS at 90 kHz.
const WRAP: i64 = 1 << 33;
const HEVC: StreamType = StreamType(0x24);

/// An elementary stream streamd reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EsKind {
    /// H.264 or HEVC, in Annex B.
    Video(VideoCodec),
    Adts,
}

/// What the demultiplexer found.
#[derive(Debug, PartialEq)]
pub enum TsEvent {
    /// One video access unit (Annex B) or one ADTS frame (header included).
    Unit {
        kind: EsKind,
        /// 90 kHz, 33 bits.
        pts: u64,
        dts: u64,
        data: Vec<u8>,
        /// False when data before it was lost.
        contiguous: bool,
    },
    /// Bytes skipped to find packet sync again.
    Resync { skipped: usize },
    /// A continuity-counter gap: packets of this stream were lost.
    Lost(EsKind),
    /// A stream of a type streamd does not read (ignored).
    Ignored { pid: u16, stream_type: u8 },
    /// A unit dropped: over the size bound, no timestamp, or bad ADTS.
    Dropped { kind: EsKind, why: &'static str },
}

packet_filter_switch! {
    Filter<Ctx> {
        Pes: pes::PesPacketFilter<Ctx, EsConsumer>,
        Pat: PatPacketFilter<Ctx>,
        Pmt: PmtPacketFilter<Ctx>,
        Null: NullPacketFilter<Ctx>,
    }
}

/// The demultiplexer's context: where the stream consumers put events.
pub struct Ctx {
    changeset: FilterChangeset<Filter>,
    events: Vec<TsEvent>,
    video_pid: Option<packet::Pid>,
    audio_pid: Option<packet::Pid>,
    ignored: Vec<packet::Pid>,
}

impl DemuxContext for Ctx {
    type F = Filter;

    fn filter_changeset(&mut self) -> &mut FilterChangeset<Filter> {
        &mut self.changeset
    }

    fn construct(&mut self, req: FilterRequest<'_, '_>) -> Filter {
        match req {
            FilterRequest::ByPid(psi::pat::PAT_PID) => Filter::Pat(PatPacketFilter::default()),
            FilterRequest::ByPid(_) | FilterRequest::Nit { .. } => {
                Filter::Null(NullPacketFilter::default())
            }
            FilterRequest::Pmt {
                pid,
                program_number,
            } => Filter::Pmt(PmtPacketFilter::new(pid, program_number)),
            FilterRequest::ByStream {
                stream_type,
                stream_info,
                pmt,
                ..
            } => {
                let pid = stream_info.elementary_pid();
                // The PMT's first stream of each kind is read; a new PMT
                // version that moves it to another PID moves with it (the
                // new PID's first unit waits for a keyframe).
                let first = |want: fn(StreamType) -> bool| {
                    pmt.streams()
                        .find(|s| want(s.stream_type()))
                        .map(|s| s.elementary_pid())
                };
                let is_video = |t| t == StreamType::H264 || t == HEVC;
                let is_audio = |t| t == StreamType::ADTS;
                // A new PMT version rebuilds every stream's filter, and the
                // unit the old one held is lost: the next one is not
                // contiguous (video waits for a keyframe).
                let mut replaced = false;
                let kind = match stream_type {
                    StreamType::H264 | HEVC if first(is_video) == Some(pid) => {
                        replaced = self.video_pid.replace(pid).is_some();
                        Some(EsKind::Video(if stream_type == HEVC {
                            VideoCodec::Hevc
                        } else {
                            VideoCodec::H264
                        }))
                    }
                    StreamType::ADTS if first(is_audio) == Some(pid) => {
                        replaced = self.audio_pid.replace(pid).is_some();
                        Some(EsKind::Adts)
                    }
                    other => {
                        if !self.ignored.contains(&pid) && self.ignored.len() < 16 {
                            self.ignored.push(pid);
                            self.events.push(TsEvent::Ignored {
                                pid: u16::from(pid),
                                stream_type: other.0,
                            });
                        }
                        None
                    }
                };
                match kind {
                    Some(kind) => {
                        Filter::Pes(pes::PesPacketFilter::new(EsConsumer::new(kind, replaced)))
                    }
                    None => Filter::Null(NullPacketFilter::default()),
                }
            }
        }
    }
}

/// Gathers one elementary stream's PES payloads into units.
pub struct EsConsumer {
    kind: EsKind,
    buf: Vec<u8>,
    /// The current PES's timestamps (33-bit, 90 kHz). For audio, `pts`
    /// belongs to the first ADTS frame that starts at or after
    /// `pes_start`, the buffer offset where that PES's bytes begin.
    pts: Option<u64>,
    dts: Option<u64>,
    pes_start: usize,
    /// The current PES is being dropped (too big, or cut by a loss).
    dropping: bool,
    /// Data was lost since the last unit.
    lost: bool,
    /// Audio: the next ADTS frame's time, when the PES gave none.
    next_audio_pts: Option<u64>,
}

impl EsConsumer {
    /// `replaced`: a new PMT version rebuilt this stream's filter (on its
    /// PID or another), and the unit the old one held was lost.
    fn new(kind: EsKind, replaced: bool) -> EsConsumer {
        EsConsumer {
            kind,
            buf: Vec::new(),
            pts: None,
            dts: None,
            pes_start: 0,
            dropping: false,
            lost: replaced,
            next_audio_pts: None,
        }
    }

    /// Forgets what is buffered, and the time that went with it.
    fn clear(&mut self) {
        self.buf.clear();
        self.pts = None;
        self.dts = None;
        self.pes_start = 0;
    }

    fn append(&mut self, ctx: &mut Ctx, data: &[u8]) {
        if self.dropping {
            return;
        }
        let limit = match self.kind {
            EsKind::Video(_) => MAX_VIDEO_UNIT,
            EsKind::Adts => MAX_AUDIO_BUFFER,
        };
        if self.buf.len() + data.len() > limit {
            ctx.events.push(TsEvent::Dropped {
                kind: self.kind,
                why: "larger than streamd takes",
            });
            self.clear();
            self.dropping = true;
            self.lost = true;
            return;
        }
        self.buf.extend_from_slice(data);
        if self.kind == EsKind::Adts {
            self.adts_frames(ctx);
        }
    }

    /// Emits every whole ADTS frame buffered, each at its own time.
    fn adts_frames(&mut self, ctx: &mut Ctx) {
        let mut at = 0;
        while self.buf.len() - at >= 7 {
            let header = match Adts::parse(&self.buf[at..]) {
                Ok(h) => h,
                Err(AdtsError::Truncated) => break,
                Err(AdtsError::Sync) => {
                    // Skip to the next sync word.
                    let skip = self.buf[at + 1..]
                        .windows(2)
                        .position(|w| w[0] == 0xff && w[1] & 0xf0 == 0xf0)
                        .map_or(self.buf.len() - at, |p| p + 1);
                    at += skip;
                    ctx.events.push(TsEvent::Dropped {
                        kind: EsKind::Adts,
                        why: "bytes without an ADTS sync word",
                    });
                    self.lost = true;
                    continue;
                }
                Err(_) => {
                    // A header we cannot read: skip its sync word.
                    at += 2;
                    ctx.events.push(TsEvent::Dropped {
                        kind: EsKind::Adts,
                        why: "an ADTS header streamd cannot read",
                    });
                    self.lost = true;
                    continue;
                }
            };
            if self.buf.len() - at < header.frame_len {
                break;
            }
            // The PES's time is its first frame's; a frame the previous
            // PES began follows on from the frame before it.
            let pes_time = if at >= self.pes_start {
                self.pts.take()
            } else {
                None
            };
            let Some(pts) = pes_time.or(self.next_audio_pts) else {
                at += header.frame_len;
                ctx.events.push(TsEvent::Dropped {
                    kind: EsKind::Adts,
                    why: "no timestamp yet",
                });
                continue;
            };
            let duration = 1024 * 90_000 / u64::from(header.sample_rate);
            self.next_audio_pts = Some((pts + duration) % WRAP as u64);
            ctx.events.push(TsEvent::Unit {
                kind: EsKind::Adts,
                pts,
                dts: pts,
                data: self.buf[at..at + header.frame_len].to_vec(),
                contiguous: !std::mem::take(&mut self.lost),
            });
            at += header.frame_len;
        }
        self.buf.drain(..at);
        self.pes_start = self.pes_start.saturating_sub(at);
    }
}

impl pes::ElementaryStreamConsumer<Ctx> for EsConsumer {
    fn start_stream(&mut self, _ctx: &mut Ctx) {}

    fn begin_packet(&mut self, ctx: &mut Ctx, header: pes::PesHeader<'_>) {
        self.dropping = false;
        if matches!(self.kind, EsKind::Video(_)) {
            self.clear();
        }
        let (mut pts, mut dts) = (None, None);
        let payload = match header.contents() {
            pes::PesContents::Parsed(Some(parsed)) => {
                match parsed.pts_dts() {
                    Ok(pes::PtsDts::PtsOnly(Ok(p))) => pts = Some(p.value()),
                    Ok(pes::PtsDts::Both {
                        pts: Ok(p),
                        dts: Ok(d),
                    }) => (pts, dts) = (Some(p.value()), Some(d.value())),
                    _ => {}
                }
                parsed.payload()
            }
            pes::PesContents::Parsed(None) => &[][..],
            pes::PesContents::Payload(p) => p,
        };
        match self.kind {
            EsKind::Video(_) => (self.pts, self.dts) = (pts, dts.or(pts)),
            EsKind::Adts => {
                // The time is the first frame's that starts in this PES
                // (a frame the last PES began, still buffered, keeps its
                // own time).
                if pts.is_some() {
                    self.pts = pts;
                    self.pes_start = self.buf.len();
                }
            }
        }
        self.append(ctx, payload);
    }

    fn continue_packet(&mut self, ctx: &mut Ctx, data: &[u8]) {
        self.append(ctx, data);
    }

    fn end_packet(&mut self, ctx: &mut Ctx) {
        if !matches!(self.kind, EsKind::Video(_)) || self.dropping {
            return;
        }
        // What follows belongs to the next PES, whose header must parse
        // (the reader appends the payload of one it could not read).
        self.dropping = true;
        let data = std::mem::take(&mut self.buf);
        let (pts, dts) = (self.pts.take(), self.dts.take());
        if data.is_empty() {
            return;
        }
        match (pts, dts) {
            (Some(pts), Some(dts)) => ctx.events.push(TsEvent::Unit {
                kind: self.kind,
                pts,
                dts,
                data,
                contiguous: !std::mem::take(&mut self.lost),
            }),
            _ => {
                self.lost = true;
                ctx.events.push(TsEvent::Dropped {
                    kind: self.kind,
                    why: "no timestamp",
                })
            }
        }
    }

    fn continuity_error(&mut self, ctx: &mut Ctx) {
        ctx.events.push(TsEvent::Lost(self.kind));
        self.clear();
        self.dropping = true;
        self.lost = true;
    }
}

/// Packets from a byte stream, through the PSI tables, to units.
pub struct TsDemux {
    demux: demultiplex::Demultiplex<Ctx>,
    ctx: Ctx,
    /// Bytes of a packet cut across two reads (fewer than 188, or what
    /// the last read held while resyncing).
    carry: Vec<u8>,
}

impl Default for TsDemux {
    fn default() -> Self {
        let mut ctx = Ctx {
            changeset: FilterChangeset::default(),
            events: Vec::new(),
            video_pid: None,
            audio_pid: None,
            ignored: Vec::new(),
        };
        TsDemux {
            demux: demultiplex::Demultiplex::new(&mut ctx),
            ctx,
            carry: Vec::new(),
        }
    }
}

impl TsDemux {
    /// Whether the PMT has listed a video and an audio stream streamd reads.
    pub fn tracks(&self) -> (bool, bool) {
        (self.ctx.video_pid.is_some(), self.ctx.audio_pid.is_some())
    }

    /// Reads `data`; what it completes is in the returned events.
    pub fn push(&mut self, data: &[u8]) -> Vec<TsEvent> {
        self.carry.extend_from_slice(data);
        let buf = std::mem::take(&mut self.carry);
        let mut at = 0;
        let mut skipped = 0;
        while buf.len() - at >= PACKET {
            if buf[at] != SYNC {
                // Lost sync: the next 0x47 that another 0x47 follows a
                // packet later (or that ends the buffer).
                let next = (at + 1..buf.len())
                    .find(|&i| buf[i] == SYNC && buf.get(i + PACKET).is_none_or(|&b| b == SYNC))
                    .unwrap_or(buf.len());
                skipped += next - at;
                at = next;
                continue;
            }
            let mut end = at;
            while end + PACKET <= buf.len() && buf[end] == SYNC {
                end += PACKET;
            }
            self.demux.push(&mut self.ctx, &buf[at..end]);
            at = end;
        }
        self.carry = buf;
        self.carry.drain(..at);
        let mut events = std::mem::take(&mut self.ctx.events);
        if skipped > 0 {
            events.insert(0, TsEvent::Resync { skipped });
        }
        events
    }
}

/// Something worth a log line that does not end the stream.
#[derive(Debug, PartialEq)]
pub enum TsNotice {
    Frame(Notice),
    Resync { skipped: usize },
    Lost(TrackKind),
    Ignored { pid: u16, stream_type: u8 },
    Dropped { kind: TrackKind, why: &'static str },
    BadAudio(String),
}

/// A 33-bit timestamp on a track's timeline: unwrapped, placed after the
/// stream's origin, and held monotonic; a jump of more than 10 s (a new
/// encoder session, a splice) continues from where the track was.
#[derive(Default)]
struct Timeline {
    last_raw: Option<i64>,
    shift: i64,
    last: Option<i64>,
}

const JUMP: i64 = 10 * 90_000;

impl Timeline {
    fn unwrap(&mut self, raw: u64) -> i64 {
        let raw = (raw % WRAP as u64) as i64;
        let t = match self.last_raw {
            None => raw,
            Some(last) => {
                let mut diff = (raw - last.rem_euclid(WRAP)).rem_euclid(WRAP);
                if diff >= WRAP / 2 {
                    diff -= WRAP;
                }
                last.saturating_add(diff)
            }
        };
        self.last_raw = Some(t);
        t
    }

    /// `dts` (unwrapped, less the origin) as this track's next time.
    fn place(&mut self, dts: i64, step: i64) -> i64 {
        let mut t = dts.saturating_add(self.shift);
        if let Some(last) = self.last {
            if t > last.saturating_add(JUMP) || t < last.saturating_sub(JUMP) {
                let next = last.saturating_add(step);
                self.shift = self.shift.saturating_add(next.saturating_sub(t));
                t = next;
            } else if t <= last {
                t = last.saturating_add(1);
            }
        }
        let t = t.max(0);
        self.last = Some(t);
        t
    }
}

/// One MPEG-TS publisher's stream onto its broadcast.
pub struct TsIngest {
    // Fields drop in order: the tracks finish their groups before the
    // broadcast is marked interrupted.
    video: AnnexBVideo,
    audio: Option<TrackProducer>,
    broadcast: BroadcastProducer,
    demux: TsDemux,
    /// The first timestamp of the stream, less a margin: time 0.
    origin: Option<i64>,
    video_time: Timeline,
    audio_time: Timeline,
    stats: IngestStats,
    meta_sent: (bool, bool),
}

/// Time 0 is this much before the first timestamp seen, so the other
/// track's first frames (muxers interleave up to ~0.7 s apart) are not
/// before it.
const ORIGIN_MARGIN: i64 = 90_000;

impl TsIngest {
    pub fn new(broadcast: BroadcastProducer) -> TsIngest {
        TsIngest {
            video: AnnexBVideo::default(),
            audio: None,
            broadcast,
            demux: TsDemux::default(),
            origin: None,
            video_time: Timeline::default(),
            audio_time: Timeline::default(),
            stats: IngestStats::default(),
            meta_sent: (false, false),
        }
    }

    pub fn broadcast(&self) -> &BroadcastProducer {
        &self.broadcast
    }

    pub fn stats(&self) -> &IngestStats {
        &self.stats
    }

    /// Reads what arrived at `at`. An error ends the stream.
    pub fn push(&mut self, data: &[u8], at: Arrival) -> Result<Vec<TsNotice>, IngestError> {
        let mut notices = Vec::new();
        let events = self.demux.push(data);
        self.announce();
        for event in events {
            match event {
                TsEvent::Unit {
                    kind,
                    pts,
                    dts,
                    data,
                    contiguous,
                } => {
                    let notice = match kind {
                        EsKind::Video(codec) => {
                            self.video(codec, &data, pts, dts, contiguous, at)?
                        }
                        EsKind::Adts => self.audio(&data, pts, at),
                    };
                    notices.extend(notice);
                }
                TsEvent::Resync { skipped } => notices.push(TsNotice::Resync { skipped }),
                TsEvent::Lost(kind) => {
                    self.stats.corrupt_frames += 1;
                    notices.push(TsNotice::Lost(track_kind(kind)))
                }
                TsEvent::Ignored { pid, stream_type } => {
                    notices.push(TsNotice::Ignored { pid, stream_type })
                }
                TsEvent::Dropped { kind, why } => {
                    self.stats.dropped_frames += 1;
                    notices.push(TsNotice::Dropped {
                        kind: track_kind(kind),
                        why,
                    })
                }
            }
        }
        Ok(notices)
    }

    /// The time of a unit: 33-bit, unwrapped, after the origin.
    fn time(&mut self, kind: EsKind, raw: u64) -> i64 {
        let (timeline, other) = match kind {
            EsKind::Video(_) => (&mut self.video_time, &self.audio_time),
            EsKind::Adts => (&mut self.audio_time, &self.video_time),
        };
        // A track's first time is read near the other's, so a stream that
        // starts close to the 33-bit wrap keeps its tracks together.
        if timeline.last_raw.is_none() {
            timeline.last_raw = other.last_raw;
        }
        let t = timeline.unwrap(raw);
        t.saturating_sub(*self.origin.get_or_insert(t.saturating_sub(ORIGIN_MARGIN)))
    }

    fn video(
        &mut self,
        codec: VideoCodec,
        data: &[u8],
        pts: u64,
        dts: u64,
        contiguous: bool,
        at: Arrival,
    ) -> Result<Option<TsNotice>, IngestError> {
        let raw_dts = self.time(EsKind::Video(codec), dts);
        // The composition offset as sent (across the wrap), bounded to
        // 0..10 s: a PTS before its DTS is taken as the DTS.
        let mut offset = (pts as i64 - dts as i64).rem_euclid(WRAP);
        if offset >= WRAP / 2 {
            offset = 0;
        }
        let offset = offset.min(JUMP);
        let t = self.video_time.place(raw_dts, 3000);
        let au = AccessUnit {
            codec,
            data,
            dts: MediaTime::new(t, Timescale::MPEG),
            pts: MediaTime::new(t.saturating_add(offset), Timescale::MPEG),
            contiguous,
            at,
        };
        let step = self.video.write(&mut self.broadcast, au, &mut self.stats)?;
        Ok(step.notice.map(TsNotice::Frame))
    }

    fn audio(&mut self, frame: &[u8], pts: u64, at: Arrival) -> Option<TsNotice> {
        let header = match Adts::parse(frame) {
            Ok(h) => h,
            Err(e) => return Some(TsNotice::BadAudio(e.to_string())),
        };
        let raw = frame
            .get(header.header_len..header.frame_len)
            .unwrap_or_default();
        if raw.is_empty() {
            return Some(TsNotice::Frame(Notice::EmptyAudioFrame));
        }
        let mut notice = None;
        let current = self.audio.as_ref().and_then(|t| t.config().cloned());
        let same = current
            .as_deref()
            .is_some_and(|c| matches!(c, CodecConfig::Aac(a) if a.raw[..] == header.config[..]));
        if !same {
            let config = match AacConfig::parse(Bytes::copy_from_slice(&header.config)) {
                Ok(c) => c,
                Err(e) => return Some(TsNotice::BadAudio(e.to_string())),
            };
            if current.is_some() {
                notice = Some(TsNotice::Frame(Notice::ConfigChanged {
                    kind: TrackKind::Audio,
                    description: format!(
                        "{} {} Hz {} ch",
                        config.codec_string(),
                        config.sample_rate,
                        config.channels
                    ),
                }));
            }
            let broadcast = &mut self.broadcast;
            let track = self.audio.get_or_insert_with(|| {
                broadcast.track(TrackInfo::source(AUDIO_TRACK, TrackKind::Audio))
            });
            track.set_config(CodecConfig::Aac(config));
        }
        let unwrapped = self.time(EsKind::Adts, pts);
        let step = 1024 * 90_000 / i64::from(header.sample_rate);
        let t = MediaTime::new(self.audio_time.place(unwrapped, step), Timescale::MPEG);
        let track = self.audio.as_mut()?;
        write_audio(track, Bytes::copy_from_slice(raw), t, at, &mut self.stats);
        notice
    }

    /// Tells the broadcast which tracks the PMT lists, when it changes, so
    /// packaging waits for both.
    fn announce(&mut self) {
        let (v, a) = self.demux.tracks();
        if (v, a) == self.meta_sent {
            return;
        }
        self.meta_sent = (v, a);
        self.broadcast.set_meta(BroadcastMeta {
            has_video: Some(v),
            has_audio: Some(a),
            encoder: Some("MPEG-TS".into()),
            source: Some("SRT"),
            ..Default::default()
        });
    }
}

fn track_kind(kind: EsKind) -> TrackKind {
    match kind {
        EsKind::Video(_) => TrackKind::Video,
        EsKind::Adts => TrackKind::Audio,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::bus::{Frame, Registry, Retention, StartAt, StreamPath, TrackEvent, TryNext};

    /// ffmpeg's MPEG-TS of the FLV fixture (H.264 with B-frames, AAC-LC):
    /// see tests/fixtures/README.md.
    const CLIP: &[u8] = include_bytes!("../../tests/fixtures/clip-160x120-2s.ts");

    fn packets(ts: &[u8]) -> Vec<Vec<u8>> {
        ts.chunks(PACKET).map(<[u8]>::to_vec).collect()
    }

    fn pid(p: &[u8]) -> u16 {
        (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2])
    }

    fn pusi(p: &[u8]) -> bool {
        p[1] & 0x40 != 0
    }

    /// The PMT's PID, from the first PAT.
    fn pmt_pid(pkts: &[Vec<u8>]) -> u16 {
        let pat = pkts.iter().find(|p| pid(p) == 0).unwrap();
        let s = 5 + usize::from(pat[4]);
        (u16::from(pat[s + 10] & 0x1f) << 8) | u16::from(pat[s + 11])
    }

    /// Rewrites the PMT section in `p` and fixes its CRC.
    fn rewrite_pmt(p: &mut [u8], edit: impl FnOnce(&mut [u8])) {
        let s = 5 + usize::from(p[4]);
        let len = (usize::from(p[s + 1] & 0x0f) << 8) | usize::from(p[s + 2]);
        let section = &mut p[s..s + 3 + len];
        let body = section.len() - 4;
        edit(&mut section[..body]);
        let crc = mpeg2ts_reader::mpegts_crc::sum32(&section[..body]);
        section[body..].copy_from_slice(&crc.to_be_bytes());
    }

    struct Run {
        _registry: Registry,
        ingest: TsIngest,
        notices: Vec<TsNotice>,
        error: Option<IngestError>,
    }

    fn run(ts: &[u8]) -> Run {
        let registry = Registry::new(Duration::ZERO, Retention::default());
        let b = registry
            .publish(StreamPath::new("app", "s").unwrap())
            .unwrap();
        let mut ingest = TsIngest::new(b);
        let (mut notices, mut error) = (Vec::new(), None);
        // As SRT delivers it: 7 packets a message.
        for chunk in ts.chunks(1316) {
            match ingest.push(chunk, Arrival::now()) {
                Ok(n) => notices.extend(n),
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        Run {
            _registry: registry,
            ingest,
            notices,
            error,
        }
    }

    fn frames(run: &Run, track: &str) -> Vec<Frame> {
        let Some(mut c) =
            run.ingest
                .broadcast()
                .consumer()
                .subscribe_at(track, StartAt::Oldest, None)
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while let TryNext::Event(TrackEvent::Frame(f)) = c.try_next() {
            out.push(f.frame);
        }
        out
    }

    #[test]
    fn ffmpegs_ts_becomes_every_frame_on_one_timeline() {
        let run = run(CLIP);
        assert!(run.error.is_none(), "{:?}", run.error);
        assert_eq!(run.notices, vec![], "a clean stream has nothing to say");
        let video = frames(&run, "video");
        let audio = frames(&run, "audio");
        // 2 s at 30 fps; the last frame's PES ends only when another
        // begins, which a live stream's next frame does.
        assert_eq!(video.len(), 59);
        // Audio frames are cut from the PES as each ADTS frame completes.
        assert_eq!(
            audio.len(),
            88,
            "every ADTS frame of the clip (ffprobe counts 88)"
        );
        assert!(video[0].keyframe && video[30].keyframe && !video[1].keyframe);
        for w in video.windows(2) {
            assert!(w[1].dts > w[0].dts, "video DTS increases");
        }
        assert!(video.iter().all(|f| f.pts >= f.dts));
        assert!(
            video.iter().any(|f| f.pts > f.dts),
            "B-frames keep their offsets"
        );
        // 33 or 34 ms apart (the clip came from FLV's milliseconds), on
        // the 90 kHz clock.
        for w in video.windows(2) {
            let step = (w[1].dts - w[0].dts).rescale(Timescale::MPEG).ticks();
            assert!([2970, 3060].contains(&step), "{step}");
        }
        let step = (audio[1].dts - audio[0].dts)
            .rescale(Timescale::MPEG)
            .ticks();
        assert!((2089..=2090).contains(&step), "{step}");
        // Audio and video start together (ffmpeg's clip starts both at 0),
        // after the origin margin.
        let (v0, a0) = (video[0].pts.as_secs_f64(), audio[0].pts.as_secs_f64());
        assert!(
            (v0 - a0).abs() < 0.1 && (0.9..1.3).contains(&v0),
            "{v0} {a0}"
        );
        assert_eq!(run.ingest.stats().video_frames, 59);
        // Frames carry slices only: no start codes, no parameter sets.
        assert!(video.iter().all(|f| f.data[..4] != [0, 0, 0, 1]));
    }

    #[test]
    fn a_lost_packet_drops_its_frame_and_video_resumes_at_the_next_keyframe() {
        let mut pkts = packets(CLIP);
        let video_pid = 0x100;
        // The second packet of the first inter frame's PES that has one.
        let starts: Vec<usize> = (0..pkts.len())
            .filter(|&i| pid(&pkts[i]) == video_pid && pusi(&pkts[i]))
            .collect();
        let (k, victim) = (1..29)
            .find_map(|k| {
                let i = (starts[k] + 1..starts[k + 1]).find(|&i| pid(&pkts[i]) == video_pid)?;
                Some((k, i))
            })
            .expect("a PES of several packets");
        pkts.remove(victim);
        let run = run(&pkts.concat());
        assert!(run.error.is_none());
        assert!(
            run.notices.contains(&TsNotice::Lost(TrackKind::Video)),
            "{:?}",
            run.notices
        );
        assert!(
            run.notices
                .contains(&TsNotice::Frame(Notice::WaitingForKeyframe))
        );
        let video = frames(&run, "video");
        // Frames before k were fine; the rest of the first GOP waits for
        // the keyframe at frame 30 (and the last frame for a next PES).
        assert_eq!(video.len(), k + 29, "{k}");
        assert!(video[k].keyframe);
    }

    #[test]
    fn junk_between_packets_is_skipped_and_nothing_is_lost() {
        let mut ts = CLIP.to_vec();
        let at = PACKET * 40;
        ts.splice(
            at..at,
            (0..100u8)
                .map(|i| i.wrapping_mul(7) | 1)
                .filter(|b| *b != SYNC),
        );
        let run = run(&ts);
        assert!(
            matches!(run.notices.as_slice(), [TsNotice::Resync { skipped }] if *skipped >= 90),
            "{:?}",
            run.notices
        );
        assert_eq!(frames(&run, "video").len(), 59);
    }

    #[test]
    fn pes_lengths_that_lie_are_not_believed() {
        let mut pkts = packets(CLIP);
        for p in pkts.iter_mut().filter(|p| pusi(p) && pid(p) >= 0x100) {
            // The PES header after any adaptation field.
            let start = if p[3] & 0x20 != 0 {
                5 + usize::from(p[4])
            } else {
                4
            };
            if start + 6 <= PACKET && p[start..start + 3] == [0, 0, 1] {
                p[start + 4] = 0x00;
                p[start + 5] = 0x09; // 9 bytes: less than its own header
            }
        }
        let run = run(&pkts.concat());
        assert!(run.error.is_none());
        assert_eq!(frames(&run, "video").len(), 59);
        assert!(frames(&run, "audio").len() >= 80);
    }

    #[test]
    fn a_pmt_that_moves_the_video_to_another_pid_is_followed() {
        let mut pkts = packets(CLIP);
        let pmt = pmt_pid(&pkts);
        // The move happens where the second keyframe's PES starts (its
        // adaptation field's random_access_indicator).
        let random_access = |p: &[u8]| p[3] & 0x20 != 0 && p[4] > 0 && p[5] & 0x40 != 0;
        let cut = pkts
            .iter()
            .enumerate()
            .filter(|(_, p)| pid(p) == 0x100 && pusi(p) && random_access(p))
            .nth(1)
            .map(|(i, _)| i)
            .expect("a second IDR");
        for p in pkts.iter_mut().skip(cut) {
            if pid(p) == 0x100 {
                p[1] = (p[1] & 0xe0) | 0x01;
                p[2] = 0x02;
            }
        }
        // The new PMT version comes just before the moved stream.
        let mut new_pmt = pkts.iter().find(|p| pid(p) == pmt).unwrap().clone();
        rewrite_pmt(&mut new_pmt, |s| {
            s[5] = (s[5] & 0xc1) | (7 << 1);
            let info = (usize::from(s[10] & 0x0f) << 8) | usize::from(s[11]);
            // The first stream's elementary PID: 0x102.
            s[12 + info + 1] = 0xe1;
            s[12 + info + 2] = 0x02;
        });
        for p in pkts.iter_mut().skip(cut).filter(|p| pid(p) == pmt) {
            p.copy_from_slice(&new_pmt);
        }
        pkts.insert(cut, new_pmt);
        let run = run(&pkts.concat());
        assert!(run.error.is_none());
        // Every frame but the old PID's last, which waits for a next PES
        // there that never comes (as the stream's very last one does).
        assert_eq!(frames(&run, "video").len(), 58);
        assert!(
            !run.notices
                .iter()
                .any(|n| matches!(n, TsNotice::Ignored { .. }))
        );
    }

    #[test]
    fn pmt_churn_keeps_the_streams() {
        let mut pkts = packets(CLIP);
        let pmt = pmt_pid(&pkts);
        let mut version = 0u8;
        for p in pkts.iter_mut().filter(|p| pid(p) == pmt) {
            version = (version + 1) % 32;
            // version_number: bits 1-5 of the section's sixth byte.
            rewrite_pmt(p, |s| s[5] = (s[5] & 0xc1) | (version << 1));
        }
        let run = run(&pkts.concat());
        assert!(run.error.is_none());
        // A new PMT version rebuilds the stream filters and costs the unit
        // in flight, so video waits for the next keyframe every time: it
        // carries on at each keyframe, and no frame that lost its
        // reference reaches the bus.
        let video = frames(&run, "video");
        eprintln!("{} video frames through the churn", video.len());
        assert!(video.iter().filter(|f| f.keyframe).count() >= 1);
        assert!(
            run.notices
                .iter()
                .any(|n| matches!(n, TsNotice::Frame(Notice::WaitingForKeyframe)))
        );
        assert!(frames(&run, "audio").len() >= 40);
    }

    #[test]
    fn hevc_goes_on_the_bus_with_an_hvcc_from_its_parameter_sets() {
        // FFmpeg 9's MPEG-TS of the HEVC fixture (B-frames, keyframe every
        // 15 frames): see tests/fixtures/README.md.
        let ts = include_bytes!("../../tests/fixtures/clip-hevc-160x120-1s.ts");
        let run = run(ts);
        assert!(run.error.is_none(), "{:?}", run.error);
        let video = frames(&run, "video");
        // The last of 30 waits for a next PES that never comes.
        assert_eq!(video.len(), 29);
        assert_eq!(video.iter().filter(|f| f.keyframe).count(), 2);
        assert!(
            video.iter().any(|f| f.pts > f.dts),
            "B-frames keep their offsets"
        );
        let mut c = run
            .ingest
            .broadcast()
            .consumer()
            .subscribe_at("video", StartAt::Oldest, None)
            .unwrap();
        let TryNext::Event(TrackEvent::Frame(f)) = c.try_next() else {
            panic!("no frame")
        };
        let CodecConfig::Hevc(config) = &*f.group.config else {
            panic!("{:?}", f.group.config)
        };
        assert_eq!(config.codec_string(), "hvc1.1.6.L60.90");
        assert_eq!((config.width, config.height), (160, 120));
        // Frames are length-prefixed, without the in-band parameter sets.
        for f in &video {
            for nal in config.nalus(&f.data) {
                let t = crate::media::hevc::nal_type(nal.unwrap()).unwrap();
                assert!(!(32..=35).contains(&t), "NAL type {t} left in band");
            }
        }
        assert!(frames(&run, "audio").len() >= 40);
    }

    #[test]
    fn other_stream_types_are_ignored() {
        let mut pkts = packets(CLIP);
        let pmt = pmt_pid(&pkts);
        for p in pkts.iter_mut().filter(|p| pid(p) == pmt) {
            // The first elementary stream's type: after the 12-byte
            // header and the program info.
            rewrite_pmt(p, |s| {
                let info = (usize::from(s[10] & 0x0f) << 8) | usize::from(s[11]);
                s[12 + info] = 0x03; // MPEG-1 audio in place of H.264
            });
        }
        let run = run(&pkts.concat());
        assert!(run.error.is_none());
        assert!(run.notices.contains(&TsNotice::Ignored {
            pid: 0x100,
            stream_type: 3
        }));
        assert!(frames(&run, "video").is_empty());
        assert!(!frames(&run, "audio").is_empty());
    }

    #[test]
    fn timestamps_wrap_at_33_bits() {
        let mut t = Timeline::default();
        let near = (WRAP - 3000) as u64;
        let a = t.unwrap(near);
        let b = t.unwrap(0);
        let c = t.unwrap(3000);
        assert_eq!((b - a, c - b), (3000, 3000));
        // Placement holds time monotonic, and a jump continues the track.
        let mut t = Timeline::default();
        assert_eq!(t.place(90_000, 3000), 90_000);
        assert_eq!(t.place(90_000, 3000), 90_001);
        assert_eq!(t.place(90_000 + 60 * 90_000, 3000), 93_001);
        assert_eq!(t.place(90_000 + 60 * 90_000 + 3000, 3000), 96_001);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut demux = TsIngest::new(
            Registry::new(Duration::ZERO, Retention::default())
                .publish(StreamPath::new("app", "x").unwrap())
                .unwrap(),
        );
        let mut pkts = packets(CLIP);
        for p in pkts.iter_mut() {
            for _ in 0..3 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let i = 1 + (state as usize % (PACKET - 1));
                p[i] = (state >> 32) as u8;
            }
        }
        for chunk in pkts.concat().chunks(1000) {
            let _ = demux.push(chunk, Arrival::now());
        }
    }
}
